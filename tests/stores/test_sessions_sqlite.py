"""SqliteSessionStore: the Auth.js adapters' rows, failures, and threads while the Auth.js
app writes the same file."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.config import Settings, load_settings
from illumichat_authz.decision import Decision
from illumichat_authz.errors import ConfigurationError, CredentialError, DependencyUnavailableError
from illumichat_authz.reasons import Reason
from illumichat_authz.request import RequestFacts
from illumichat_authz.stores.sessions import SqliteSessionStore, parse_expires

READERS, LOOKUPS, SESSIONS = 8, 60, 20
EXPIRES = 1_750_000_000_000  # Drizzle timestamp_ms


def _d1_database(path: Path, rows: list[tuple[str, str, Any]]) -> Path:
    # The @auth/d1-adapter migration's "sessions" table.
    conn = sqlite3.connect(path)
    conn.execute(
        'CREATE TABLE "sessions" ("id" text NOT NULL, "sessionToken" text NOT NULL, '
        '"userId" text NOT NULL DEFAULT NULL, "expires" datetime NOT NULL DEFAULT NULL, '
        "PRIMARY KEY (sessionToken))"
    )
    conn.executemany(
        'INSERT INTO sessions (id, "sessionToken", "userId", expires) VALUES (?, ?, ?, ?)',
        [(str(i), *row) for i, row in enumerate(rows)],
    )
    conn.commit()
    conn.close()
    return path


def test_sqlite_store(tmp_path: Path) -> None:
    db = _d1_database(
        tmp_path / "auth.sqlite3",
        [
            ("tok-iso", "u1", "2025-06-15T15:06:40.000Z"),  # toISOString()
            ("tok-ms", "u2", 1_750_000_000_000),  # Drizzle timestamp_ms
            ("tok-naive", "u3", "2025-06-15 15:06:40"),  # SQLite datetime(): UTC
            ("tok-bad", "u4", "tomorrow"),
        ],
    )
    store = SqliteSessionStore(db)
    iso = store.get_session("tok-iso")
    assert iso is not None
    assert (iso.user_id, iso.expires) == ("u1", 1_750_000_000.0)
    ms = store.get_session("tok-ms")
    assert ms is not None
    assert ms.expires == 1_750_000_000.0
    naive = store.get_session("tok-naive")
    assert naive is not None
    assert naive.expires == 1_750_000_000.0
    assert store.get_session("nope") is None
    with pytest.raises(CredentialError):
        store.get_session("tok-bad")
    store.close()
    # The whole strategy: [session] database names the file, the driver looks tokens up.
    settings = load_settings(
        overrides={"session": {"secrets": ["s1"], "database": str(db)}}, environment=False
    )
    before = _identify(settings, "tok-iso", now=1_749_999_999.0)
    assert before.principal is not None
    assert before.principal.user_id == "u1"
    after = _identify(settings, "tok-iso", now=1_750_000_001.0)
    assert (after.status, after.reason) == (401, Reason.SESSION_EXPIRED)


def _identify(settings: Settings, token: str, *, now: float) -> Decision:
    authz = Authorizer.from_settings(settings, clock=lambda: now)
    request = RequestFacts.build(
        method="GET",
        path="/",
        headers={"host": "app.illumichat.test", "cookie": f"authjs.session-token={token}"},
    )
    try:
        return authz.identify(request)
    finally:
        sessions = authz.sessions
        assert isinstance(sessions, SqliteSessionStore)
        sessions.close()


def test_sqlite_store_unavailable(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "missing.sqlite3")
    with pytest.raises(DependencyUnavailableError) as info:
        store.get_session("t")
    assert info.value.status == 503
    with pytest.raises(ConfigurationError):
        SqliteSessionStore(tmp_path / "x", table='sessions"; DROP TABLE x; --')


def test_parse_expires() -> None:
    assert parse_expires("1970-01-01T00:00:01+00:00") == 1.0
    for bad in (True, 1.5, None, "x" * 100, "not a date"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_expires(bad)


def _auth_database(path: Path, journal_mode: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute(
        'CREATE TABLE "sessions" ("sessionToken" text PRIMARY KEY, "userId" text NOT NULL, '
        '"expires" integer NOT NULL)'
    )
    conn.executemany(
        "INSERT INTO sessions VALUES (?, ?, ?)",
        [(f"tok-{i}", f"user-{i}", EXPIRES) for i in range(SESSIONS)],
    )
    conn.close()


def _lookups(store: SqliteSessionStore, start: threading.Barrier) -> list[BaseException]:
    """READERS threads, LOOKUPS each after ``start``; every answer checked; the errors."""
    errors: list[BaseException] = []

    def reader(r: int) -> None:
        try:
            start.wait()
            for j in range(LOOKUPS):
                token = f"tok-{(r + j) % SESSIONS}"
                found = store.get_session(token)
                assert found is not None
                assert (found.session_token, found.user_id) == (token, f"user-{(r + j) % SESSIONS}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(r,)) for r in range(READERS)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join()
    return errors


def test_wal_lookups_never_wait_for_the_app_writing(tmp_path: Path) -> None:
    """The app writes without a pause (what Auth.js does all day: sign-ins insert rows,
    requests extend ``expires``); every lookup answers right, none is a 503."""
    db = tmp_path / "auth.sqlite3"
    _auth_database(db, "wal")
    store = SqliteSessionStore(db)
    done = threading.Event()
    writes: list[int] = []

    def app() -> None:
        conn = sqlite3.connect(db, isolation_level=None, timeout=10)
        n = 0
        while not done.is_set():
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO sessions VALUES (?, ?, ?)", (f"new-{n}", "u", EXPIRES))
            conn.execute(
                'UPDATE sessions SET "expires" = "expires" + 1 WHERE "sessionToken" = ?',
                (f"tok-{n % SESSIONS}",),
            )
            conn.execute("COMMIT")
            n += 1
        writes.append(n)
        conn.close()

    writer = threading.Thread(target=app)
    writer.start()
    try:
        errors = _lookups(store, threading.Barrier(READERS + 1))
    finally:
        done.set()
        writer.join()
        store.close()
    assert errors == []
    assert writes[0] > 0


def test_rollback_journal_lookups_wait_out_a_commit(tmp_path: Path) -> None:
    """Under a rollback journal the app's commit locks readers out; they wait (up to
    ``timeout_s``) and then answer, instead of a 503."""
    db = tmp_path / "auth.sqlite3"
    _auth_database(db, "delete")
    store = SqliteSessionStore(db, timeout_s=10)
    app = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    app.execute("BEGIN EXCLUSIVE")  # what a commit holds, here held for a while
    start = threading.Barrier(READERS + 1, action=threading.Timer(0.2, app.rollback).start)
    try:
        errors = _lookups(store, start)
    finally:
        app.close()
        store.close()
    assert errors == []


def test_a_thread_per_request_server_reuses_connections(tmp_path: Path) -> None:
    db = tmp_path / "auth.sqlite3"
    _auth_database(db, "wal")
    store = SqliteSessionStore(db)
    opened: list[int] = []
    open_connection = store._open

    def counting_open() -> sqlite3.Connection:
        opened.append(1)
        return open_connection()

    store._pool = type(store._pool)(counting_open)
    for _ in range(20):  # one new thread per request, one after the other
        t = threading.Thread(target=store.get_session, args=("tok-1",))
        t.start()
        t.join()
    store.close()
    assert len(opened) == 1
