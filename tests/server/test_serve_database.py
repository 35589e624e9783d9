"""``serve`` on a database: two instances (separate processes) see every change live.

Facts are loaded and removed with the ``facts`` commands while both servers run; each one
refuses a removed member within the propagation bound, with no restart, and its readiness
endpoint reports the facts revision it has applied and its lag.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from test_serve_cli import CLI, free_port, listening, running

from illumichat_authz.cli import main
from illumichat_authz.credentials.authjs import encode_session_token
from postgres_server import fresh_database, postgres  # noqa: F401 (fixtures)

pytestmark = pytest.mark.interop

SECRET = "serve-database-secret-0123456789abcdef"


def _write(path: Path, doc: str) -> str:
    path.write_text(doc)
    return str(path)


def test_two_instances_follow_the_database_live(
    request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A membership removal, a grant revocation and an API key revocation, each made by
    another process, are refused by both running instances."""
    url = request.getfixturevalue("fresh_database")
    config = tmp_path / "authz.toml"
    config.write_text(
        f'[session]\nsecrets = ["{SECRET}"]\n[database]\nurl = "{url}"\n'
        "poll_interval_s = 0.5\n[api_keys]\ncache_ttl_s = 300\n"
    )
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    facts = _write(
        tmp_path / "facts.json",
        '{"memberships": [{"user": "bob", "workspace": "w1", "role": "member"},'
        ' {"user": "carol", "workspace": "w1", "role": "member"}],'
        ' "assistants": [{"id": "a1", "workspace": "w1", "visibility": "workspace",'
        ' "creator": "alice"}, {"id": "a2", "workspace": "w1", "visibility": "private",'
        ' "creator": "alice"}],'
        ' "grants": [{"user": "carol", "assistant": "a2"}]}',
    )
    assert main(["facts", "load", "--config", str(config), facts]) == 0
    capsys.readouterr()
    assert (
        main(["keys", "create", "--config", str(config), "--user", "carol", "--workspace", "w1"])
        == 0
    )
    key = capsys.readouterr().out.splitlines()[0]

    def cookie(user: str) -> str:
        token = encode_session_token({"sub": user}, secret=SECRET, now=time.time())
        return f"authjs.session-token={token}"

    bob = {"cookie": cookie("bob")}
    carol = {"cookie": cookie("carol")}
    carol_key = {"authorization": f"Bearer {key}", "x-workspace-id": "w1"}
    ports = [free_port(), free_port()]
    argv = [[*CLI, "serve", "--config", str(config), "--port", str(p)] for p in ports]
    with running(argv[0], listening(ports[0])), running(argv[1], listening(ports[1])):
        clients = [httpx.Client(base_url=f"http://127.0.0.1:{p}", timeout=10) for p in ports]
        try:

            def statuses(path: str, headers: dict[str, str]) -> list[int]:
                return [c.get(f"/auth{path}", headers=headers).status_code for c in clients]

            def until(path: str, headers: dict[str, str], want: list[int]) -> None:
                deadline = time.monotonic() + 2
                while (got := statuses(path, headers)) != want:
                    assert time.monotonic() < deadline, (path, got)
                    time.sleep(0.01)

            assert statuses("/api/assistants/a1", bob) == [200, 200]
            assert statuses("/api/assistants/a2", carol) == [200, 200]  # the grant
            assert statuses("/api/assistants", carol_key) == [200, 200]  # cached for 300 s
            allowed = clients[0].get("/auth/api/assistants/a1", headers=bob)
            assert allowed.headers["x-authz-revision"] == "2"  # the revision it decided at
            denied = clients[1].get("/auth/api/assistants/a2", headers=bob)
            assert (denied.status_code, denied.headers["x-authz-revision"]) == (403, "2")
            for client in clients:
                ready = client.get("/readyz").json()
                assert ready["status"] == "ready"
                assert ready["facts"]["revision"] == 2  # the facts, then the key
                assert ready["facts"]["listening"] is True
                assert ready["facts"]["lag_s"] < 5

            gone = _write(
                tmp_path / "gone.json",
                '{"memberships": [{"user": "bob", "workspace": "w1", "role": "member"}],'
                ' "grants": [{"user": "carol", "assistant": "a2"}]}',
            )
            assert main(["facts", "remove", "--config", str(config), gone]) == 0
            until("/api/assistants/a1", bob, [403, 403])
            until("/api/assistants/a2", carol, [403, 403])
            assert main(["keys", "revoke", "--config", str(config), key]) == 0
            until("/api/assistants", carol_key, [401, 401])
            for client in clients:
                assert client.get("/readyz").json()["facts"]["revision"] == 4
        finally:
            for client in clients:
                client.close()
