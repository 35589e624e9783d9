"""The compiled decision table equals casbin, over the whole attribute space.

``Policy`` asks casbin about every point of the (small) attribute space at load time and
keeps the answers in a dict. These tests check that the dict says what casbin says, for
the shipped policy, for edited copies of it and for a policy with a fifth role and a
second resource kind with visibility, asking casbin both through ``enforce_ex`` and
through ``enforce`` (with the enforce context of the second request/policy pair for the
visibility table). Editing
``policy.csv`` must change decisions with no code change. Malformed policy files must fail
at start-up with ``ConfigurationError`` naming the file (and the line where it can).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.config import default_policies_dir, load_settings
from illumichat_authz.errors import ConfigurationError
from illumichat_authz.facts import Assistant, InMemoryFacts, Membership
from illumichat_authz.policy import Key, Policy
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.request import RequestFacts
from illumichat_authz.vocab import NO_ROLE, Role, Visibility

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"
#: The acceptance policy: an `editor` role and a `document` kind (tests/cli/).
EDITOR_POLICIES = Path(__file__).resolve().parents[1] / "cli" / "policies_editor"


def _load(directory: Path) -> Policy:
    return Policy(model_path=directory / "model.conf", policy_path=directory / "policy.csv")


def _copy(tmp_path: Path, edit: Callable[[str], str] | None = None) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(REPO_POLICIES, target)
    if edit is not None:
        csv = target / "policy.csv"
        csv.write_text(edit(csv.read_text(encoding="utf-8")), encoding="utf-8")
    return target


def _casbin_ex(policy: Policy, key: Key) -> bool:
    """casbin's ``enforce_ex``: p for the role, p2 (context "2") for visibility."""
    role, status, act, rel, kind, vis = key
    enforcer = policy.enforcer
    ok, _ = enforcer.enforce_ex(role, status, act, rel)
    if ok and kind is not None:
        ctx = enforcer.new_enforce_context("2")
        ok, _ = enforcer.enforce_ex(ctx, role, status, kind, vis, rel)
    return bool(ok)


def _casbin_direct(policy: Policy, key: Key) -> bool:
    """casbin's enforce, called by hand: p for the role, p2 (context "2") for visibility."""
    role, status, act, rel, kind, vis = key
    enforcer = policy.enforcer
    allowed = bool(enforcer.enforce(role, status, act, rel))
    if allowed and kind is not None:
        ctx = enforcer.new_enforce_context("2")
        allowed = bool(enforcer.enforce(ctx, role, status, kind, vis, rel))
    return allowed


def assert_table_equals_casbin(policy: Policy) -> int:
    points = list(policy.space())
    wrong = []
    for key in points:
        table = policy.verdict(*key).allowed
        if table != _casbin_ex(policy, key) or table != _casbin_direct(policy, key):
            wrong.append(key)
    assert not wrong, f"{len(wrong)} points differ, e.g. {wrong[:5]}"
    assert set(policy.table) == set(points)
    return len(points)


def test_the_shipped_policy_is_the_repository_policy() -> None:
    for name in ("model.conf", "policy.csv", "routes.toml"):
        assert (default_policies_dir() / name).read_bytes() == (REPO_POLICIES / name).read_bytes()


def test_the_table_equals_casbin_over_the_whole_space() -> None:
    policy = _load(REPO_POLICIES)
    count = assert_table_equals_casbin(policy)
    # The space is the full product of the sets the policy names, not a sample of it:
    # no visibility (None, None) plus each kind's visibility values.
    assert policy.visibilities == {"assistant": ("public", "workspace", "private")}
    roles = len(policy.roles) + 1
    assert count == roles * 2 * len(policy.actions) * 4 * (1 + 3)
    assert set(policy.roles) == {r.value for r in Role}
    # The space really contains allows and denies of both tables.
    verdicts = [policy.verdict(*key) for key in policy.space()]
    assert any(v.allowed for v in verdicts)
    assert {v.reason.value for v in verdicts if not v.allowed} >= {
        "not_a_member",
        "membership_inactive",
        "insufficient_role",
        "not_visible",
    }


def test_a_fifth_role_and_a_second_kind_equal_casbin_over_their_whole_space() -> None:
    policy = _load(EDITOR_POLICIES)
    count = assert_table_equals_casbin(policy)
    assert policy.roles[:5] == ("owner", "admin", "editor", "member", "guest")
    assert policy.visibilities == {
        "assistant": ("public", "workspace", "private"),
        "document": ("team", "private"),
    }
    assert count == 6 * 2 * len(policy.actions) * 4 * (1 + 3 + 2)
    # The new role sits between admin and member: it has member's rules and its own.
    assert policy.verdict(
        "editor", "active", "assistant:update", "-", "assistant", "workspace"
    ).allowed
    assert policy.verdict("editor", "active", "chat:create", "-", "assistant", "public").allowed
    assert not policy.verdict("editor", "active", "member:invite", "-", None, None).allowed
    assert not policy.verdict(
        "member", "active", "assistant:update", "-", "assistant", "public"
    ).allowed
    # The new kind's visibility is its own table: a private document is its creator's.
    private_doc = ("member", "active", "document:read", "creator", "document", "private")
    assert policy.verdict(*private_doc).allowed
    other = policy.verdict("member", "active", "document:read", "-", "document", "private")
    assert (other.allowed, other.reason.value) == (False, "not_visible")
    assert other.message == "this private document is not visible to you"
    assert "see a private document" in other.explanation[-1]
    # Grants matter where a p2 line names the grantee relation, per kind.
    assert policy.grant_matters("assistant:read", "assistant", "private")
    assert not policy.grant_matters("document:read", "document", "private")
    assert not policy.grant_matters("assistant:read", "assistant", "public")


def test_no_role_is_never_allowed_and_is_not_a_member() -> None:
    policy = _load(REPO_POLICIES)
    for key in policy.space():
        if key[0] == NO_ROLE:
            verdict = policy.verdict(*key)
            assert not verdict.allowed
            assert verdict.reason.value == "not_a_member"


def test_points_outside_the_space_are_denied_not_errors() -> None:
    policy = _load(REPO_POLICIES)
    for key in (
        ("owner", "active", "unknown:action", "-", None, None),
        ("superuser", "active", "assistant:read", "-", "assistant", "public"),
        ("owner", "pending", "assistant:read", "-", "assistant", "public"),
        ("owner", "active", "assistant:read", "-", "assistant", "secret"),
        ("owner", "active", "assistant:read", "-", "document", "team"),
    ):
        assert not policy.verdict(*key).allowed
    # A visibility value no p2 line names is denied as casbin denies it (statuses are
    # normalised to active/inactive before the policy is asked, so "pending" is not).
    for key in (
        ("owner", "active", "assistant:read", "-", "assistant", "secret"),
        ("owner", "active", "assistant:read", "-", "document", "team"),
    ):
        assert not _casbin_direct(policy, key)
    unlisted = policy.verdict("owner", "active", "assistant:read", "-", "assistant", "secret")
    assert unlisted.reason.value == "not_visible"
    assert unlisted.message == "this secret assistant is not visible to you"


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
        key
        for key in shipped.space()
        if shipped.verdict(*key).allowed != edited.verdict(*key).allowed
    }
    assert {(key[2], key[0]) for key in changed} == {
        ("chat:create", "guest"),
        ("member:remove", "admin"),
    }
    for key in changed:
        gained = key[2] == "chat:create"
        assert edited.verdict(*key).allowed is gained
        assert key[1] == "active"


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
    "p2 without its kind column (the old five)": ("p2, guest, *, public, *", True),
    "p2 status outside the vocabulary": ("p2, guest, invited, assistant, public, *", False),
    "a wildcard visibility": ("p2, guest, *, assistant, *, *", False),
    "a wildcard resource kind": ("p2, guest, *, *, public, *", False),
    "a wildcard action": ("p, guest, *, *, *", False),
    "relation outside the vocabulary": ("p, guest, *, chat:list, owner", False),
    "p2 relation outside the vocabulary": ("p2, guest, *, assistant, public, friend", False),
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


def test_casbin_is_imported_only_to_compile_a_policy() -> None:
    # Deciding reads the compiled table: importing the package (and the policy and route
    # modules) must not pull casbin into a process that only decides.
    code = (
        "import sys, illumichat_authz, illumichat_authz.policy, illumichat_authz.routes\n"
        "assert 'casbin' not in sys.modules, 'casbin imported'\n"
        "from illumichat_authz.policy import Policy\n"
        "from illumichat_authz.config import default_policies_dir as d\n"
        "Policy(model_path=d() / 'model.conf', policy_path=d() / 'policy.csv')\n"
        "assert 'casbin' in sys.modules\n"
    )
    src = Path(__file__).resolve().parent.parent / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
