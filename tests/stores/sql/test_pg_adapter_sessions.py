"""Auth.js database sessions written by the real ``@auth/pg-adapter`` (npm, driven from node
through tests/interop/pg_adapter_peer.mjs) into PostgreSQL, read by the library: a live
session is its user, an expired or deleted one is 401, and with the database down 503."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from illumichat_authz import Authorizer, RequestFacts, load_settings
from illumichat_authz.config import DatabaseSettings
from illumichat_authz.facts import Membership
from illumichat_authz.stores.sql import migrate
from illumichat_authz.stores.sql.database import Database
from postgres_server import PostgresServer

INTEROP = Path(__file__).resolve().parents[2] / "interop"
PEER = INTEROP / "pg_adapter_peer.mjs"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not (INTEROP / "node_modules" / "@auth" / "pg-adapter").is_dir(),
        reason="tests/interop/node_modules missing: run `npm ci --prefix tests/interop`",
    ),
]


def adapter(url: str, *requests: dict[str, Any]) -> list[Any]:
    node = shutil.which("node")
    assert node is not None, "node is not installed but tests/interop/node_modules is"
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    done = subprocess.run(
        [node, str(PEER), dsn],
        input=json.dumps(list(requests)),
        capture_output=True,
        text=True,
        cwd=INTEROP,
        timeout=60,
        check=True,
    )
    results = json.loads(done.stdout)
    assert all(r["ok"] for r in results), results
    return [r["value"] for r in results]


def _ask(authorizer: Authorizer, token: str) -> tuple[int, str, str | None]:
    request = RequestFacts.build(
        method="GET",
        path="/api/assistants",
        headers=[("cookie", f"authjs.session-token={token}"), ("x-workspace-id", "w1")],
    )
    decision = authorizer.decide(request)
    user = decision.principal.user_id if decision.principal is not None else None
    return int(decision.status), decision.reason.value, user


def test_sessions_written_by_the_real_pg_adapter(fresh_database: str, tmp_path: Path) -> None:
    [_, user] = adapter(
        fresh_database,
        {"op": "schema"},
        {"op": "createUser", "email": "bob@example.com", "name": "Bob"},
    )
    uid = user["id"]
    now = time.time()
    adapter(
        fresh_database,
        {
            "op": "createSession",
            "sessionToken": "live-token-1",
            "userId": uid,
            "expires": now + 3600,
        },
        {"op": "createSession", "sessionToken": "old-token-2", "userId": uid, "expires": now - 60},
        {
            "op": "createSession",
            "sessionToken": "gone-token-3",
            "userId": uid,
            "expires": now + 3600,
        },
        {"op": "deleteSession", "sessionToken": "gone-token-3"},
    )
    config = tmp_path / "authz.toml"
    config.write_text(
        f'[session]\nsecrets = ["s-0123456789abcdef0123456789abcdef"]\ndatabase_sessions = true\n'
        f'[database]\nurl = "{fresh_database}"\n'
    )
    settings = load_settings(config, environment=False)
    database = Database(settings.database)
    migrate.upgrade(database.engine)
    database.writer.apply(upsert=[Membership(user=str(uid), workspace="w1", role="member")])
    database.close()
    authorizer = Authorizer.from_settings(settings)
    try:
        # The adapter's integer id, as text, is the user the facts name.
        assert _ask(authorizer, "live-token-1") == (200, "allowed", str(uid))
        assert _ask(authorizer, "old-token-2")[0] == 401
        assert _ask(authorizer, "gone-token-3")[0] == 401
        assert _ask(authorizer, "never-issued")[0] == 401
        # The app signs the user out: the adapter deletes the row; the next request is 401
        # (once the credential cache's short time to live has passed).
        adapter(fresh_database, {"op": "deleteSession", "sessionToken": "live-token-1"})
        authorizer.credential_cache.clear()
        assert _ask(authorizer, "live-token-1")[0] == 401
    finally:
        authorizer.close()


def test_a_session_lookup_with_the_database_down_is_503(tmp_path: Path) -> None:
    server = PostgresServer()
    server.start()
    try:
        url = server.url()
        adapter(url, {"op": "schema"})
        database = Database(DatabaseSettings(url=url))
        migrate.upgrade(database.engine)
        database.close()
        config = tmp_path / "authz.toml"
        config.write_text(
            '[session]\nsecrets = ["s-0123456789abcdef0123456789abcdef"]\n'
            f'database_sessions = true\n[database]\nurl = "{url}"\n'
        )
        authorizer = Authorizer.from_settings(load_settings(config, environment=False))
        try:
            assert _ask(authorizer, "some-token")[0] == 401
            server.stop()
            status, reason, _ = _ask(authorizer, "some-token")
            assert (status, reason) == (503, "auth_unavailable")
        finally:
            authorizer.close()
    finally:
        server.remove()
