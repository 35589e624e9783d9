"""Policy versions in the database (``[policies] source = "database"``): ``policy
publish`` checks before it stores, stages, waits for every live instance to prepare and
activates; an instance that refuses the version stops the activation; ``rollback`` and
``status``; shadow versions; an instance that cannot read the active version does not
start. On SQLite (the feed's poll) and on a real PostgreSQL (its notifications)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from illumichat_authz import Authorizer, CredentialKind, Principal, load_settings
from illumichat_authz.cli import main
from illumichat_authz.errors import DependencyUnavailableError
from illumichat_authz.stores.sql.engine import create_engine
from illumichat_authz.stores.sql.policy_versions import PolicyVersions
from illumichat_authz.testing import FactsBuilder

from .test_rollout_files import POLICIES, copy_policies, without_member_settings_read

ALICE = Principal(user_id="alice", kind=CredentialKind.SESSION)


def write_config(tmp: Path, url: str, name: str = "authz.toml", extra: str = "") -> Path:
    config = tmp / name
    config.write_text(
        f"""
[policies]
dir = "{POLICIES}"
source = "database"
watch_interval_s = 0.05
{extra}
[database]
url = "{url}"
poll_interval_s = 0.05
"""
    )
    return config


@pytest.fixture
def sqlite_config(tmp_path: Path) -> Path:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'authz.db'}")
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    return config


def instance(config: Path) -> Authorizer:
    builder = FactsBuilder()
    builder.workspace("w1").member("alice", role="member")
    return Authorizer.from_settings(load_settings(str(config)), facts=builder.facts)


@pytest.fixture
def instances(request: pytest.FixtureRequest) -> Iterator[list[Authorizer]]:
    started: list[Authorizer] = []
    yield started
    for authz in started:
        authz.close()


def settings_read(authz: Authorizer) -> int:
    return authz.decide_access(principal=ALICE, action="settings:read", workspace="w1").status


def versions_of(config: Path) -> PolicyVersions:
    return PolicyVersions(create_engine(load_settings(str(config)).database.url or ""))


def status_json(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["policy", "status", "--config", str(config), "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_publish_rollback_status_on_sqlite(
    tmp_path: Path,
    sqlite_config: Path,
    instances: list[Authorizer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Nothing published yet: the instance serves policies.dir.
    a = instance(sqlite_config)
    instances.append(a)
    first = a.core.policy_revision
    assert settings_read(a) == 200
    assert a.rollout is not None
    assert a.rollout.status().version is None

    # A broken candidate: exit 1, nothing stored, nothing changed.
    broken = copy_policies(tmp_path, "broken")
    (broken / "policy.csv").write_text("p, member, active, nosuch:act, *\n")
    assert main(["policy", "publish", "--config", str(sqlite_config), str(broken)]) == 1
    assert "FAILED: nothing was published" in capsys.readouterr().out
    assert versions_of(sqlite_config).versions() == []

    # Version 1 = the shipped policy; version 2 = members no longer read settings.
    assert main(["policy", "publish", "--config", str(sqlite_config), "--note", "base"]) == 0
    changed = without_member_settings_read(copy_policies(tmp_path, "v2"))
    assert main(["policy", "publish", "--config", str(sqlite_config), str(changed)]) == 0
    out = capsys.readouterr().out
    assert "stored version 2" in out
    assert "1 of 1 live instance(s) report it" in out
    assert settings_read(a) == 403  # already swapped when publish returned
    second = a.core.policy_revision
    assert second != first
    assert a.rollout.status().version == 2
    status = status_json(sqlite_config, capsys)
    assert (status["active"], status["revision"], status["staged"]) == (2, second, None)
    [row] = status["instances"]
    assert (row["version"], row["revision"], row["applied"]) == (2, second, True)
    assert [v["version"] for v in status["versions"]] == [1, 2]

    # Rollback: to the version before (1), then --to 2 again; an unknown version: exit 1.
    assert main(["policy", "rollback", "--config", str(sqlite_config)]) == 0
    assert settings_read(a) == 200
    assert a.core.policy_revision == first
    assert main(["policy", "rollback", "--config", str(sqlite_config), "--to", "9"]) == 1
    assert main(["policy", "rollback", "--config", str(sqlite_config), "--to", "2"]) == 0
    assert settings_read(a) == 403
    # A new instance starts on the active version, not on its policies.dir.
    b = instance(sqlite_config)
    instances.append(b)
    assert b.core.policy_revision == second
    assert settings_read(b) == 403
    capsys.readouterr()
    assert main(["policy", "status", "--config", str(sqlite_config)]) == 0
    text = capsys.readouterr().out
    assert f"active: version 2 (policy {second})" in text
    assert text.count("NOT applied") == 0
    assert text.count(" applied;") == 2


def test_a_version_one_instance_refuses_is_not_activated(
    tmp_path: Path,
    sqlite_config: Path,
    instances: list[Authorizer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The publisher's checks pass, but one instance's own settings make the version
    fail there (its host routes declare a route the candidate declares too): nobody
    activates it, the fleet stays on one policy, and both the CLI and status say why."""
    assert main(["policy", "publish", "--config", str(sqlite_config)]) == 0
    a = instance(sqlite_config)
    instances.append(a)
    host = tmp_path / "host.toml"
    host.write_text('[[route]]\nmethods = ["GET"]\npath = "/healthz"\nclass = "public"\n'
                    'action = "health:read"\n')  # fmt: skip
    picky_config = write_config(
        tmp_path, load_settings(str(sqlite_config)).database.url or "", "picky.toml",
        f'host_routes = ["{host}"]',
    )  # fmt: skip
    b = instance(picky_config)
    instances.append(b)
    candidate = copy_policies(tmp_path, "v2", tests=False)
    with (candidate / "routes.toml").open("a") as routes:
        routes.write('\n[[route]]\nmethods = ["GET"]\npath = "/healthz"\nclass = "public"\n'
                     'action = "health:read"\n')  # fmt: skip
    before = (a.core.policy_revision, b.core.policy_revision)
    capsys.readouterr()
    assert main(["policy", "publish", "--config", str(sqlite_config), str(candidate)]) == 1
    out = capsys.readouterr().out
    assert f"refused by {b.rollout.instance}" in out  # type: ignore[union-attr]
    assert "was not activated" in out
    time.sleep(0.3)
    assert (a.core.policy_revision, b.core.policy_revision) == before
    state = versions_of(sqlite_config).state()
    assert (state.active, state.staged) == (1, None)
    refused = b.rollout.status().refused  # type: ignore[union-attr]
    assert refused is not None
    assert "GET /healthz shadows" in refused


def test_shadow_version(
    tmp_path: Path,
    sqlite_config: Path,
    instances: list[Authorizer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    a = instance(sqlite_config)
    instances.append(a)
    changed = without_member_settings_read(copy_policies(tmp_path, "candidate"))
    assert main(["policy", "shadow", "--config", str(sqlite_config), str(changed)]) == 0
    deadline = time.monotonic() + 5
    while a.rollout.shadow is None and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.02)
    shadow = a.rollout.shadow  # type: ignore[union-attr]
    assert shadow is not None
    from illumichat_authz import RequestFacts

    decision = a.decide(
        RequestFacts(method="GET", path="/api/workspaces/w1/settings"), principal=ALICE
    )
    shadow.drain()
    assert decision.status == 200  # enforced: the live policy
    assert shadow.stats().differed == 1
    assert versions_of(sqlite_config).state().active is None  # nothing was activated
    assert main(["policy", "shadow", "--config", str(sqlite_config), "--off"]) == 0
    deadline = time.monotonic() + 5
    while a.rollout.shadow is not None and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.02)
    assert a.rollout.shadow is None  # type: ignore[union-attr]


def test_an_instance_that_cannot_read_the_active_version_does_not_start(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'never-upgraded.db'}")
    with pytest.raises(DependencyUnavailableError, match="active policy cannot be read"):
        instance(config)


@pytest.mark.interop
def test_publish_reaches_every_instance_on_postgresql(
    tmp_path: Path,
    fresh_database: str,
    instances: list[Authorizer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, fresh_database)
    # The poll is slow here: only the notification can make the swap this quick.
    config.write_text(config.read_text().replace("poll_interval_s = 0.05", "poll_interval_s = 30")
                      .replace("watch_interval_s = 0.05", "watch_interval_s = 30"))  # fmt: skip
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert main(["policy", "publish", "--config", str(config)]) == 0
    fleet = [instance(config) for _ in range(3)]
    instances.extend(fleet)
    for authz in fleet:
        authz.rollout.heartbeat()  # type: ignore[union-attr]
    changed = without_member_settings_read(copy_policies(tmp_path, "v2"))
    started = time.monotonic()
    assert main(["policy", "publish", "--config", str(config), str(changed)]) == 0
    took = time.monotonic() - started
    assert "3 of 3 live instance(s) report it" in capsys.readouterr().out
    assert all(settings_read(authz) == 403 for authz in fleet)
    assert took < 5  # prepared on notification, swapped on notification
    assert len({authz.core.policy_revision for authz in fleet}) == 1
    shutil.rmtree(changed)


def test_a_malformed_stored_version_is_refused_and_the_rollout_goes_on(
    sqlite_config: Path, instances: list[Authorizer]
) -> None:
    from sqlalchemy import update

    from illumichat_authz.stores.sql.schema import policy_versions

    a = instance(sqlite_config)
    instances.append(a)
    before = a.core.policy_revision
    versions = versions_of(sqlite_config)
    files = {"model.conf": (POLICIES / "model.conf").read_text()}
    bad = versions.stage(files, "x", staged=False)
    with versions.engine.begin() as conn:  # written around the library: not JSON
        conn.execute(update(policy_versions).values(files="{not json"))
    versions.activate(bad)
    rollout = a.rollout
    assert rollout is not None
    deadline = time.monotonic() + 5
    while rollout.status().refused is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rollout.status().refused is not None
    assert a.core.policy_revision == before
    assert rollout._thread is not None
    assert rollout._thread.is_alive()
    assert settings_read(a) == 200
