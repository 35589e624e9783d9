"""Safe policy rollout from files: a candidate is checked before it may replace the live
policy, the swap is atomic under concurrent decisions, watched files are picked up, a bad
candidate is refused (the last good one keeps serving), and shadow mode logs differences
while enforcing nothing."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import pytest

from illumichat_authz import Authorizer, CredentialKind, Principal, RequestFacts, Settings
from illumichat_authz.compile import build_core
from illumichat_authz.rollout import PolicyRejected, compile_candidate
from illumichat_authz.testing import FactsBuilder

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
MEMBER_SETTINGS_READ = "p, member, active, settings:read, *\n"
ADMIN_SETTINGS_READ = "p, admin, active, settings:read, *\n"
ALICE = Principal(user_id="alice", kind=CredentialKind.SESSION)
SETTINGS_PATH = "/api/workspaces/w1/settings"


def copy_policies(tmp: Path, name: str, *, tests: bool = True) -> Path:
    target = tmp / name
    shutil.copytree(POLICIES, target)
    if not tests:
        shutil.rmtree(target / "tests")
    return target


def without_member_settings_read(directory: Path) -> Path:
    """A policy where a member may no longer read the workspace settings (and no shipped
    table that expects it)."""
    csv = directory / "policy.csv"
    text = csv.read_text()
    assert MEMBER_SETTINGS_READ in text
    csv.write_text(text.replace(MEMBER_SETTINGS_READ, ADMIN_SETTINGS_READ))
    shutil.rmtree(directory / "tests", ignore_errors=True)
    return directory


def settings_for(directory: Path, **policies: object) -> Settings:
    return Settings.model_validate({"policies": {"dir": str(directory), **policies}})


def facts() -> object:
    builder = FactsBuilder()
    builder.workspace("w1").member("alice", role="member")
    return builder.facts


def read_settings(authz: Authorizer) -> tuple[int, str | None]:
    d = authz.decide_access(
        principal=ALICE, action="settings:read", resource_kind=None, workspace="w1"
    )
    return d.status, d.policy_revision


# --- the candidate's checks ---------------------------------------------------------------
def test_the_shipped_policy_passes_and_compiles_to_its_revision(tmp_path: Path) -> None:
    directory = copy_policies(tmp_path, "p")
    core = compile_candidate(settings_for(directory), directory)
    assert core.policy_revision == build_core(settings_for(POLICIES)).policy_revision


@pytest.mark.parametrize(
    ("breakage", "says"),
    [
        (lambda d: (d / "policy.csv").write_text("p, member, active, nosuch:act, *\n"), "compile"),
        (lambda d: (d / "model.conf").write_text("[request_definition]\nr = \n"), "compile"),
        (lambda d: (d / "routes.toml").write_text("[[route]]\nmethod = 1\n"), "compile"),
        (lambda d: (d / "routes.toml").unlink(), "compile"),
        # Valid on its own, but the table it ships expects members to read settings.
        (
            lambda d: (d / "policy.csv").write_text(
                (d / "policy.csv").read_text().replace(MEMBER_SETTINGS_READ, ADMIN_SETTINGS_READ)
            ),
            "tests/illumichat.yaml",
        ),
        (lambda d: (d / "tests" / "bad.yaml").write_text("principals: [1, 2]\n"), "tests/bad.yaml"),
    ],
)
def test_a_bad_candidate_is_refused_with_its_reason(tmp_path: Path, breakage, says: str) -> None:  # type: ignore[no-untyped-def]
    directory = copy_policies(tmp_path, "p")
    breakage(directory)
    with pytest.raises(PolicyRejected) as refused:
        compile_candidate(settings_for(directory), directory)
    assert refused.value.problems
    assert any(says in problem for problem in refused.value.problems), refused.value.problems


def test_a_strict_warning_refuses_the_candidate(tmp_path: Path) -> None:
    from illumichat_authz.policy_check import check_policy

    directory = copy_policies(tmp_path, "p", tests=False)
    csv = directory / "policy.csv"
    # A rule for a role nothing grants: `policy check` warns, a rollout refuses.
    csv.write_text(csv.read_text() + "p, auditor, active, billing:read, *\n")
    core = build_core(settings_for(directory))
    assert [f for f in check_policy(core.policy, core.routes) if f.severity == "warning"]
    with pytest.raises(PolicyRejected, match="policy check --strict"):
        compile_candidate(settings_for(directory), directory)


# --- the swap -----------------------------------------------------------------------------
def test_no_decision_sees_two_policies_while_they_swap(tmp_path: Path) -> None:
    """Eight threads decide while a ninth swaps two policies back and forth as fast as it
    can: every decision's answer is the one its reported revision gives."""
    old = build_core(settings_for(POLICIES))
    new = compile_candidate(
        settings_for(POLICIES), without_member_settings_read(copy_policies(tmp_path, "n"))
    )
    expected = {old.policy_revision: 200, new.policy_revision: 403}
    authz = Authorizer(core=old, facts=facts())  # type: ignore[arg-type]
    request = RequestFacts(method="GET", path=SETTINGS_PATH)
    stop = threading.Event()
    seen: list[tuple[int, str | None]] = []
    wrong: list[tuple[int, str | None]] = []

    def decide() -> None:
        while not stop.is_set():
            d = authz.decide(request, principal=ALICE)
            seen.append((d.status, d.policy_revision))
            if expected.get(d.policy_revision or "") != d.status:
                wrong.append((d.status, d.policy_revision))

    threads = [threading.Thread(target=decide) for _ in range(8)]
    for t in threads:
        t.start()
    swaps = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        authz.core = new if authz.core is old else old
        swaps += 1
    stop.set()
    for t in threads:
        t.join()
    assert swaps > 100
    assert not wrong
    assert {rev for _, rev in seen} == set(expected)  # both policies did decide


# --- watched files ------------------------------------------------------------------------
def wait_for(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def test_watched_files_are_swapped_in_and_a_bad_change_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = copy_policies(tmp_path, "live", tests=False)
    authz = Authorizer.from_settings(
        settings_for(directory, watch=True, watch_interval_s=0.02),
        facts=facts(),  # type: ignore[arg-type]
    )
    try:
        assert authz.rollout is not None
        status, first = read_settings(authz)
        assert status == 200
        without_member_settings_read(directory)
        assert wait_for(lambda: read_settings(authz)[0] == 403)
        second = read_settings(authz)[1]
        assert second != first
        assert authz.rollout.status().revision == second
        # A broken edit: refused, logged, shown; the last good policy keeps deciding.
        with caplog.at_level(logging.ERROR, logger="illumichat_authz.rollout"):
            (directory / "policy.csv").write_text("p, member, active, nosuch:act, *\n")
            assert wait_for(lambda: authz.rollout.status().refused is not None)  # type: ignore[union-attr]
        assert read_settings(authz) == (403, second)
        status_now = authz.rollout.status()
        assert status_now.revision == second
        assert "does not compile" in (status_now.refused or "")
        assert any("refused" in r.getMessage() for r in caplog.records)
        # Fixed again: picked up.
        shutil.copy(POLICIES / "policy.csv", directory / "policy.csv")
        assert wait_for(lambda: read_settings(authz) == (200, first))
        assert authz.rollout.status().refused is None
    finally:
        authz.close()


def test_without_watch_the_files_are_read_once(tmp_path: Path) -> None:
    directory = copy_policies(tmp_path, "live", tests=False)
    authz = Authorizer.from_settings(settings_for(directory), facts=facts())  # type: ignore[arg-type]
    try:
        assert authz.rollout is None
        without_member_settings_read(directory)
        time.sleep(0.1)
        assert read_settings(authz)[0] == 200
    finally:
        authz.close()


# --- shadow mode ----------------------------------------------------------------------------
def test_shadow_logs_every_difference_and_enforces_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shadow = without_member_settings_read(copy_policies(tmp_path, "candidate"))
    authz = Authorizer.from_settings(
        settings_for(POLICIES, shadow_dir=str(shadow)),
        facts=facts(),  # type: ignore[arg-type]
    )
    try:
        rollout = authz.rollout
        assert rollout is not None
        assert rollout.shadow is not None
        live_revision = authz.core.policy_revision
        with caplog.at_level(logging.WARNING, logger="illumichat_authz.shadow"):
            differing = authz.decide(
                RequestFacts(method="GET", path=SETTINGS_PATH), principal=ALICE
            )
            same = authz.decide(
                RequestFacts(method="GET", path="/api/workspaces/w1/members"), principal=ALICE
            )
            anonymous = authz.decide(RequestFacts(method="GET", path=SETTINGS_PATH))
            rollout.shadow.drain()
        assert differing.status == 200
        assert differing.policy_revision == live_revision
        assert same.status == 200
        assert anonymous.status == 401
        stats = rollout.shadow.stats()
        assert (stats.compared, stats.differed) == (3, 1), stats
        [diff] = list(rollout.shadow.differences)
        assert (diff.live_status, diff.shadow_status, diff.principal) == (200, 403, "alice")
        assert diff.route == "GET /api/workspaces/{workspaceId}/settings"
        [line] = [r.getMessage() for r in caplog.records if r.name == "illumichat_authz.shadow"]
        assert "would answer 403" in line
        assert "answered 200" in line
        assert rollout.status().shadow == stats.as_dict()
    finally:
        authz.close()


def test_shadow_counts_no_rate_limit_hit(tmp_path: Path) -> None:
    """A rate-limited route decided in shadow leaves the live limit's count alone."""
    authz = Authorizer.from_settings(settings_for(POLICIES, shadow_dir=str(POLICIES)))
    try:
        limited = [r for r in authz.core.routes.routes if r.rate_limit]
        assert limited, "the shipped routes have a rate-limited route"
        route = limited[0]
        path = route.template.replace("{", "").replace("}", "")
        request = RequestFacts(method=route.method, path=path, peer="10.0.0.9")
        spec = authz.core.rate_limits[route.id]
        answers = [authz.decide(request).status for _ in range(spec.amount + 1)]
        assert authz.rollout is not None
        assert authz.rollout.shadow is not None
        authz.rollout.shadow.drain()
        # Exactly the limit admitted: the shadow's replays counted nothing.
        assert answers.count(429) == 1
        assert answers[-1] == 429
    finally:
        authz.close()


def test_policies_compile_side_by_side_in_threads() -> None:
    """Rollouts of several authorizers compile at once: casbin's ``ast`` parsing is not
    thread-safe on CPython 3.11, and a failure there would refuse a good policy."""
    errors: list[BaseException] = []
    revisions: list[str] = []

    def compile_one() -> None:
        try:
            revisions.append(build_core(settings_for(POLICIES)).policy_revision)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=compile_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(revisions)) == 1
    assert len(revisions) == 6
