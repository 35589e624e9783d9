"""A fleet: instances in separate processes (``tests/fleet_worker.py``) on one PostgreSQL.

A membership removal, a grant revocation and an API key revocation made through one
instance's own write path are refused by every other instance, within the propagation
bound; a thousand changes written while the other instances' listeners are killed again
and again are all applied, in order, with no cache reset (caught up from the change log,
never reloaded).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from postgres_server import killing_listeners

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parents[2]
WORKER = HERE / "fleet_worker.py"
SECRET = "fleet-secret-0123456789abcdef0123456789"


class Instance:
    """One worker process and its command channel."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.ready = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the worker exited ({self.proc.wait()})")
        return dict(json.loads(line))

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def ask(self, **command: Any) -> dict[str, Any]:
        self.send(**command)
        return self.read()

    def close(self) -> None:
        try:
            self.send(op="quit")
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def write_config(path: Path, url: str, *, listen: bool = True, poll: float = 0.5) -> Path:
    path.write_text(
        f'[session]\nsecrets = ["{SECRET}"]\n'
        f'[database]\nurl = "{url}"\npoll_interval_s = {poll}\n'
        f"listen = {'true' if listen else 'false'}\n"
        "[api_keys]\ncache_ttl_s = 300\n"
    )
    return path


@pytest.fixture
def fleet(fresh_database: str, tmp_path: Path) -> Iterator[tuple[str, list[Instance]]]:
    from illumichat_authz.cli import main

    config = write_config(tmp_path / "authz.toml", fresh_database)
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    instances: list[Instance] = []
    try:
        for _ in range(3):
            instances.append(Instance(config))
        yield fresh_database, instances
    finally:
        for instance in instances:
            instance.close()


FACTS = {
    "memberships": [
        {"user": "bob", "workspace": "w1", "role": "member"},
        {"user": "carol", "workspace": "w1", "role": "member"},
    ],
    "assistants": [
        {"id": "a1", "workspace": "w1", "visibility": "workspace", "creator": "alice"},
        {"id": "a2", "workspace": "w1", "visibility": "private", "creator": "alice"},
    ],
    "grants": [{"user": "carol", "assistant": "a2"}],
}


def _until_everywhere(others: list[Instance], want: int, **question: Any) -> None:
    deadline = time.monotonic() + 2.0
    for other in others:
        while (got := other.ask(op="access", **question)["status"]) != want:
            assert time.monotonic() < deadline, (question, got)
            time.sleep(0.005)


def test_changes_made_through_one_instance_are_refused_by_the_others(
    fleet: tuple[str, list[Instance]],
) -> None:
    _, (writer, *others) = fleet
    assert writer.ask(op="write", upsert=FACTS)["revision"] == 1
    read_a1 = {"user": "bob", "action": "assistant:read", "kind": "assistant", "id": "a1"}
    read_a2 = {"user": "carol", "action": "assistant:read", "kind": "assistant", "id": "a2"}
    _until_everywhere(others, 200, **read_a1)
    _until_everywhere(others, 200, **read_a2)  # the grant
    key = writer.ask(op="create_key", user="carol", workspace="w1")
    bearer = [["authorization", f"Bearer {key['token']}"], ["x-workspace-id", "w1"]]
    for other in others:  # verified once, then cached for 300 s
        assert other.ask(op="decide", path="/api/assistants", headers=bearer)["status"] == 200

    writer.ask(op="write", remove={"memberships": [FACTS["memberships"][0]]})
    _until_everywhere(others, 403, **read_a1)
    writer.ask(op="write", remove={"grants": FACTS["grants"]})
    _until_everywhere(others, 403, **read_a2)
    assert writer.ask(op="revoke_key", key_id=key["key_id"])["revoked"] is True
    deadline = time.monotonic() + 2.0
    for other in others:  # the cached principal is dropped on every instance
        while other.ask(op="decide", path="/api/assistants", headers=bearer)["status"] != 401:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    for instance in (writer, *others):
        assert instance.ask(op="status")["applied"] == 5


def test_a_thousand_changes_with_listeners_killed_lose_nothing(
    fleet: tuple[str, list[Instance]],
) -> None:
    url, (writer, *others) = fleet
    changes = 1000
    with killing_listeners(url, every_s=0.05) as killed:
        for i in range(changes):
            member = {"user": f"u{i}", "workspace": "w1", "role": "member"}
            assert writer.ask(op="write", upsert={"memberships": [member]})["revision"] == i + 1
    assert killed[0] >= 2
    deadline = time.monotonic() + 15
    for other in others:
        while (seen := other.ask(op="applied", since=0))["applied"] < changes:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert sorted(map(int, seen["times"])) == list(range(1, changes + 1))  # each, once
        assert seen["resets"] == 0  # caught up from the change log, never reloaded
        for i in (0, changes // 2, changes - 1):
            question = {"user": f"u{i}", "action": "assistant:list", "kind": "workspace"}
            assert other.ask(op="access", id="w1", **question)["status"] == 200
