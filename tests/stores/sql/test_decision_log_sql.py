"""The decision log's ``database`` sink on SQLite and a real PostgreSQL (COPY), read back by
``read_events`` and by ``illumichat-authz audit tail`` with its filters and ``--follow``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from illumichat_authz import Authorizer, CredentialKind, Principal, RequestFacts, load_settings
from illumichat_authz.audit import DecisionEvent
from illumichat_authz.cli import main
from illumichat_authz.stores.sql import migrate
from illumichat_authz.stores.sql.decision_log import SqlDecisionSink, read_events
from illumichat_authz.stores.sql.engine import create_engine

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'authz.db'}"
    found: str = request.getfixturevalue("fresh_database")
    return found


def _config(tmp_path: Path, url: str, allows: str = "none") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[session]\nsecrets = ["{"s" * 32}"]\n'
        f'[database]\nurl = "{url}"\n'
        f'[decision_log]\nsinks = ["database"]\nallows = "{allows}"\n'
    )
    return path


def _decide_some(config: Path) -> None:
    authz = Authorizer.from_settings(load_settings(config, environment=False))
    alice = Principal(user_id="alice", kind=CredentialKind.SESSION)
    bob = Principal(user_id="bob", kind=CredentialKind.SESSION)
    try:
        for _ in range(3):
            authz.decide(RequestFacts(method="GET", path="/api/assistants/a1", peer="127.0.0.1"))
        for who in (alice, bob, bob):
            authz.decide_access(
                principal=who, action="assistant:read", resource_kind="assistant", resource_id="a9"
            )
    finally:
        authz.close()  # writes what is queued


def test_events_persist_and_are_read_back_filtered(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, url)
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    _decide_some(config)
    engine = create_engine(url)
    everything = read_events(engine, limit=100)
    assert len(everything) == 6
    assert [e["status"] for e in everything].count(401) == 3
    assert [e["principal"] for e in read_events(engine, principal="bob")] == ["bob", "bob"]
    assert {e["reason"] for e in read_events(engine, status=404)} <= {"not_found"}
    assert len(read_events(engine, route="GET /api/assistants/{assistantId}")) == 3
    assert len(read_events(engine, limit=2)) == 2
    future = "2999-01-01T00:00:00.000Z"
    assert read_events(engine, since=future) == []
    assert len(read_events(engine, until=future)) == 6
    engine.dispose()
    capsys.readouterr()

    assert main(["audit", "tail", "--config", str(config), "--user", "bob", "-n", "1"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["principal"] == "bob"
    assert main(["audit", "tail", "--config", str(config), "--since", "3600"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6
    assert main(["audit", "tail", "--config", str(config), "--reason", "nope"]) == 0
    assert capsys.readouterr().out == ""


def test_postgres_copy_keeps_up_with_a_large_batch(fresh_database: str) -> None:
    engine = create_engine(fresh_database)
    migrate.upgrade(engine)
    sink = SqlDecisionSink(engine)
    events = [
        DecisionEvent(
            f"{i:032x}",
            "2026-12-03T10:00:00.000Z",
            None,
            None,
            f"u{i % 100}",
            "session",
            None,
            "GET /x",
            "x:read",
            None,
            None,
            "w1",
            403,
            "policy_denied",
            "abc",
            None,
            1.5,
        )
        for i in range(20_000)
    ]
    t0 = time.perf_counter()
    for start in range(0, len(events), 5000):
        sink.write(events[start : start + 5000])
    elapsed = time.perf_counter() - t0
    assert len(read_events(engine, limit=100_000)) == 20_000
    assert elapsed < 20  # a generous bound: the benchmark measures the rate
    engine.dispose()


def test_tail_follow_prints_new_events(tmp_path: Path) -> None:
    log = tmp_path / "decisions.ndjson"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[session]\nsecrets = ["{"s" * 32}"]\n[decision_log]\nsinks = ["file:{log}"]\n'
    )
    log.write_text("")
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "illumichat_authz.cli",
            "audit",
            "tail",
            "--config",
            str(config),
            "-f",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        authz = Authorizer.from_settings(load_settings(config, environment=False))
        for _ in range(4):
            authz.decide(RequestFacts(method="GET", path="/api/assistants/a1", peer="127.0.0.1"))
        authz.close()
        assert follower.stdout is not None
        lines = [follower.stdout.readline() for _ in range(4)]
    finally:
        follower.terminate()
        follower.communicate(timeout=10)  # closes its stdout pipe
    events = [json.loads(line) for line in lines]
    assert [e["status"] for e in events] == [401] * 4
    assert len({e["decision_id"] for e in events}) == 4


def test_tail_without_a_readable_sink_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[decision_log]\nsinks = ["stdout"]\n')
    assert main(["audit", "tail", "--config", str(config)]) == 2
    assert "no decision log to read" in capsys.readouterr().err
    assert main(["audit", "tail", "--file", str(tmp_path / "none.ndjson")]) == 2
    with pytest.raises(SystemExit) as usage:
        main(["audit", "tail", "--file", str(config), "--since", "yesterday"])
    assert usage.value.code == 2
    assert "not a time" in capsys.readouterr().err
