"""The compiled decision table equals casbin, over the whole attribute space.

``Policy`` asks casbin about every point of the (small, closed) attribute space at load
time and keeps the answers in a dict. These tests check that the dict says what casbin
says, for the shipped policy and for edited copies of it, asking casbin both through
``Policy.casbin_allows`` and directly through ``enforcer.enforce`` (with the enforce
context of the second request/policy pair for the visibility table). Editing
``policy.csv`` must change decisions with no code change. Malformed policy files must fail
at start-up with ``ConfigurationError`` naming the file (and the line where it can).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.config import default_policies_dir, load_settings
from illumichat_authz.errors import ConfigurationError
from illumichat_authz.facts import Assistant, InMemoryFacts, Membership
from illumichat_authz.policy import Attributes, Policy
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.request import RequestFacts
from illumichat_authz.vocab import NO_ROLE, Role, Visibility

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


def _load(directory: Path) -> Policy:
    return Policy(model_path=directory / "model.conf", policy_path=directory / "policy.csv")


def _copy(tmp_path: Path, edit: Callable[[str], str] | None = None) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(REPO_POLICIES, target)
    if edit is not None:
        csv = target / "policy.csv"
        csv.write_text(edit(csv.read_text(encoding="utf-8")), encoding="utf-8")
    return target


def _casbin_direct(policy: Policy, a: Attributes) -> bool:
    """casbin's enforce, called by hand: p for the role, p2 (context "2") for visibility."""
    enforcer = policy.enforcer
    allowed = bool(enforcer.enforce(a.role, a.status, a.act, a.rel))
    if allowed and a.vis is not None:
        ctx = enforcer.new_enforce_context("2")
        allowed = bool(enforcer.enforce(ctx, a.role, a.status, a.vis, a.rel))
    return allowed


def assert_table_equals_casbin(policy: Policy) -> int:
    points = list(policy.space())
    wrong = []
    for a in points:
        table = policy.evaluate(a).allowed
        if table != policy.casbin_allows(a) or table != _casbin_direct(policy, a):
            wrong.append(a)
    assert not wrong, f"{len(wrong)} points differ, e.g. {wrong[:5]}"
    return len(points)


def test_the_shipped_policy_is_the_repository_policy() -> None:
    for name in ("model.conf", "policy.csv", "routes.toml"):
        assert (default_policies_dir() / name).read_bytes() == (REPO_POLICIES / name).read_bytes()


def test_the_table_equals_casbin_over_the_whole_space() -> None:
    policy = _load(REPO_POLICIES)
    count = assert_table_equals_casbin(policy)
    # The space is the full product of the closed sets, not a sample of it.
    roles = len(policy.roles) + 1
    assert count == roles * 2 * len(policy.actions) * 4 * 4
    assert set(policy.roles) == {r.value for r in Role}
    # The space really contains allows and denies of both tables.
    verdicts = [policy.evaluate(a) for a in policy.space()]
    assert any(v.allowed for v in verdicts)
    assert {v.reason.value for v in verdicts if not v.allowed} >= {
        "not_a_member",
        "membership_inactive",
        "insufficient_role",
        "not_visible",
    }


def test_no_role_is_never_allowed_and_is_not_a_member() -> None:
    policy = _load(REPO_POLICIES)
    for a in policy.space():
        if a.role == NO_ROLE:
            verdict = policy.evaluate(a)
            assert not verdict.allowed
            assert verdict.reason.value == "not_a_member"


def test_points_outside_the_space_are_denied_not_errors() -> None:
    policy = _load(REPO_POLICIES)
    for a in (
        Attributes("owner", "active", "unknown:action", "-", None),
        Attributes("superuser", "active", "assistant:read", "-", "public"),
        Attributes("owner", "pending", "assistant:read", "-", "public"),
        Attributes("owner", "active", "assistant:read", "-", "secret"),
    ):
        assert not policy.evaluate(a).allowed


# --- Editing the policy changes decisions, with no code change -------------------------


def _guests_chat_and_admins_cannot_remove(text: str) -> str:
    removed = "p, admin, active, member:remove, -\n"
    assert removed in text
    return text.replace(removed, "") + "p, guest, active, chat:create, *\n"


def test_an_edited_policy_still_equals_casbin_and_differs_where_edited(tmp_path: Path) -> None:
    shipped = _load(REPO_POLICIES)
    edited = _load(_copy(tmp_path, _guests_chat_and_admins_cannot_remove))
    assert_table_equals_casbin(edited)
    changed = {
        a for a in shipped.space() if shipped.evaluate(a).allowed != edited.evaluate(a).allowed
    }
    assert {(a.act, a.role) for a in changed} == {
        ("chat:create", "guest"),
        ("member:remove", "admin"),
    }
    for a in changed:
        gained = a.act == "chat:create"
        assert edited.evaluate(a).allowed is gained
        assert a.status == "active"


def _decide(policies: Path, *, role: Role, method: str, path: str) -> int:
    facts = InMemoryFacts(
        memberships=[
            Membership(user="u1", workspace="w1", role=role),
            Membership(user="u3", workspace="w1", role=Role.MEMBER),
        ],
        assistants=[Assistant(id="a1", workspace="w1", visibility=Visibility.PUBLIC, creator="u2")],
    )
    settings = load_settings(overrides={"policies": {"dir": str(policies)}})
    authz = Authorizer.from_settings(settings, facts=facts)
    principal = Principal(user_id="u1", kind=CredentialKind.SESSION, workspace="w1")
    return authz.decide(RequestFacts.build(method=method, path=path), principal=principal).status


def test_decisions_follow_the_edited_files(tmp_path: Path) -> None:
    edited = _copy(tmp_path, _guests_chat_and_admins_cannot_remove)
    asks = [
        (Role.GUEST, "POST", "/api/assistants/a1/chats"),
        (Role.ADMIN, "DELETE", "/api/workspaces/w1/members/u3"),
        (Role.OWNER, "DELETE", "/api/workspaces/w1/members/u3"),
    ]
    before = [_decide(REPO_POLICIES, role=r, method=m, path=p) for r, m, p in asks]
    after = [_decide(edited, role=r, method=m, path=p) for r, m, p in asks]
    assert before == [403, 200, 200]
    assert after == [200, 403, 200]


def test_an_action_left_without_rules_fails_at_start_up_naming_the_route(tmp_path: Path) -> None:
    def edit(text: str) -> str:
        return text.replace("p, admin, active, settings:update, *\n", "")

    directory = _copy(tmp_path, edit)
    assert_table_equals_casbin(_load(directory))
    with pytest.raises(
        ConfigurationError, match=r"routes\.toml route #\d+: action 'settings:update'"
    ):
        Authorizer.from_settings(load_settings(overrides={"policies": {"dir": str(directory)}}))


def test_moving_a_rule_to_owners_changes_who_may(tmp_path: Path) -> None:
    def edit(text: str) -> str:
        old = "p, admin, active, settings:update, *\n"
        return text.replace(old, "") + "p, owner, active, settings:update, *\n"

    edited = _copy(tmp_path, edit)
    assert_table_equals_casbin(_load(edited))
    path = "/api/workspaces/w1/settings"
    assert _decide(edited, role=Role.OWNER, method="PATCH", path=path) == 200
    assert _decide(edited, role=Role.ADMIN, method="PATCH", path=path) == 403
    assert _decide(REPO_POLICIES, role=Role.ADMIN, method="PATCH", path=path) == 200


# --- Malformed policy files fail at start-up, naming the file -------------------------

BAD_POLICY_LINES = {
    "unknown ptype": ("p3, guest, active, chat:list, *", True),
    "too few columns": ("p, guest, active, chat:list", True),
    "too many columns": ("p, guest, active, chat:list, *, extra", True),
    "g with three roles": ("g, owner, admin, member", True),
    "empty field": ("p, guest, , chat:list, *", True),
    "unbalanced quote": ('p, guest, "active, chat:list, *', True),
    "status outside the vocabulary": ("p, guest, pending, chat:list, *", False),
    "p2 status outside the vocabulary": ("p2, guest, invited, public, *", False),
    "visibility outside the vocabulary": ("p2, guest, *, secret, *", False),
    "relation outside the vocabulary": ("p, guest, *, chat:list, owner", False),
    "p2 relation outside the vocabulary": ("p2, guest, *, public, friend", False),
    "the reserved role none in p": ("p, none, *, assistant:list, *", False),
    "the reserved role none in g": ("g, none, guest", False),
}


@pytest.mark.parametrize("case", sorted(BAD_POLICY_LINES))
def test_a_malformed_policy_line_is_a_configuration_error(case: str, tmp_path: Path) -> None:
    line, has_lineno = BAD_POLICY_LINES[case]
    directory = _copy(tmp_path, lambda text: text + line + "\n")
    csv = directory / "policy.csv"
    lineno = len(csv.read_text(encoding="utf-8").splitlines())
    with pytest.raises(ConfigurationError) as info:
        _load(directory)
    message = str(info.value)
    assert str(csv) in message
    if has_lineno:
        assert f"{csv}:{lineno}:" in message
    # The same through the settings, as a host would start.
    with pytest.raises(ConfigurationError):
        Authorizer.from_settings(load_settings(overrides={"policies": {"dir": str(directory)}}))


@pytest.mark.parametrize(
    "case", sorted(k for k, (_, has_lineno) in BAD_POLICY_LINES.items() if not has_lineno)
)
def test_a_vocabulary_error_names_the_line(case: str, tmp_path: Path) -> None:
    line, _ = BAD_POLICY_LINES[case]
    directory = _copy(tmp_path, lambda text: text + line + "\n")
    csv = directory / "policy.csv"
    lineno = len(csv.read_text(encoding="utf-8").splitlines())
    with pytest.raises(ConfigurationError, match=f"{csv}:{lineno}"):
        _load(directory)


def test_a_model_that_is_not_a_model_is_a_configuration_error(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    (directory / "model.conf").write_text("this is not a casbin model\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"model\.conf"):
        _load(directory)


def test_missing_policy_files_are_configuration_errors(tmp_path: Path) -> None:
    for name in ("model.conf", "policy.csv"):
        directory = _copy(tmp_path / name)
        (directory / name).unlink()
        with pytest.raises(ConfigurationError, match=re.escape(name)):
            _load(directory)


BAD_MODELS = {
    "matcher syntax error": lambda s: s.replace("r.act == p.act", "r.act === p.act"),
    "matcher calls an unknown function": lambda s: s.replace(
        "keyMatch(r.status", "nosuch(r.status"
    ),
    "no [matchers] section": lambda s: s.split("[matchers]")[0],
    "no request definition r": lambda s: s.replace("r = role, status, act, rel\n", ""),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_a_broken_model_is_a_configuration_error(case: str, tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    model = directory / "model.conf"
    model.write_text(BAD_MODELS[case](model.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"model\.conf"):
        _load(directory)


def test_a_policy_file_that_is_not_utf8_is_a_configuration_error(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    csv = directory / "policy.csv"
    csv.write_bytes(csv.read_bytes() + b"p, guest, active, chat:list, \xff\n")
    with pytest.raises(ConfigurationError, match=r"policy\.csv"):
        _load(directory)
