"""SqliteApiKeyStore against a real SQLite file: threads, two instances, throttled touch."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.credentials.apikeys import ApiKeyRecord, ApiKeyStore, issue_api_key
from illumichat_authz.decision import Decision
from illumichat_authz.errors import DependencyUnavailableError
from illumichat_authz.principal import Principal
from illumichat_authz.reasons import Reason
from illumichat_authz.request import RequestFacts
from illumichat_authz.stores.api_keys import (
    CachingApiKeyStore,
    MemoryApiKeyStore,
    SqliteApiKeyStore,
)
from illumichat_authz.testing.fixtures import build_test_authorizer, make_test_settings

NOW = 1_800_000_000.0
#: The test kit's core (API keys on) without a credential cache: every request asks the store.
CORE = build_test_authorizer(make_test_settings(api_keys={"cache_ttl_s": 0})).core


def identify(token: str, store: ApiKeyStore, *, now: float) -> Decision:
    """``Authorization: Bearer <token>`` through the driver: look up, verify, record use."""
    request = RequestFacts.build(
        method="GET",
        path="/",
        headers={"host": "api.illumichat.test", "authorization": f"Bearer {token}"},
    )
    return Authorizer(core=CORE, api_keys=store, clock=lambda: now).identify(request)


def principal(token: str, store: ApiKeyStore, *, now: float) -> Principal:
    decision = identify(token, store, now=now)
    assert decision.principal is not None, decision
    return decision.principal


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "keys.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteApiKeyStore]:
    s = SqliteApiKeyStore(db)
    yield s
    s.close()


def _issue(workspace: str = "ws_1", user: str = "user_1", **kw: object) -> tuple[str, ApiKeyRecord]:
    return issue_api_key(user_id=user, workspace=workspace, now=NOW, **kw)  # type: ignore[arg-type]


def test_schema_created_on_first_use_with_wal(store: SqliteApiKeyStore, db: Path) -> None:
    assert not db.exists()
    assert store.get("nothing") is None
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "api_keys" in tables


def test_round_trip_preserves_every_field(store: SqliteApiKeyStore) -> None:
    _, record = _issue(scopes=["chats:read", "assistants:use"], expires_at=NOW + 5, name="ci")
    store.add(record)
    assert store.get(record.key_id) == record
    _, empty = _issue(scopes=[])
    _, unscoped = _issue()
    store.add(empty)
    store.add(unscoped)
    got_empty, got_unscoped = store.get(empty.key_id), store.get(unscoped.key_id)
    assert got_empty is not None
    assert got_empty.scopes == frozenset()
    assert got_unscoped is not None
    assert got_unscoped.scopes is None


def test_only_the_digest_is_stored(store: SqliteApiKeyStore, db: Path) -> None:
    token, record = _issue()
    store.add(record)
    raw = db.read_bytes() + (db.with_name(db.name + "-wal").read_bytes())
    assert token.encode() not in raw
    assert token[17:60].encode() not in raw


def test_duplicate_key_id_is_refused(store: SqliteApiKeyStore) -> None:
    _, record = _issue()
    store.add(record)
    with pytest.raises(ValueError, match="already exists"):
        store.add(record)


def test_list_filters_and_never_needs_secrets(store: SqliteApiKeyStore) -> None:
    records = [
        _issue("ws_a", "u1")[1],
        _issue("ws_a", "u2")[1],
        _issue("ws_b", "u1")[1],
    ]
    for r in records:
        store.add(r)
    assert {r.key_id for r in store.list()} == {r.key_id for r in records}
    assert {r.user_id for r in store.list(workspace="ws_a")} == {"u1", "u2"}
    assert [r.workspace for r in store.list(user="u1", workspace="ws_b")] == ["ws_b"]
    assert store.list(workspace="nope") == []


def test_two_instances_on_one_file_see_revocation_immediately(db: Path) -> None:
    api, admin = SqliteApiKeyStore(db), SqliteApiKeyStore(db)
    try:
        token, record = _issue()
        admin.add(record)
        assert principal(token, api, now=NOW).credential_id == record.key_id
        assert admin.revoke(record.key_id, now=NOW + 1) is True
        assert identify(token, api, now=NOW + 1).reason is Reason.API_KEY_REVOKED
        # Revoking again keeps the first time; unknown ids are reported.
        assert admin.revoke(record.key_id, now=NOW + 50) is True
        got = api.get(record.key_id)
        assert got is not None
        assert got.revoked_at == NOW + 1
        assert admin.revoke("unknownKeyId", now=NOW) is False
    finally:
        api.close()
        admin.close()


def test_touch_is_throttled_across_instances(db: Path) -> None:
    a, b = SqliteApiKeyStore(db), SqliteApiKeyStore(db)
    try:
        _, record = _issue()
        a.add(record)
        a.touch(record.key_id, now=NOW)
        b.touch(record.key_id, now=NOW + 30)  # b's memory is empty; the WHERE refuses
        got = a.get(record.key_id)
        assert got is not None
        assert got.last_used_at == NOW
        a.touch(record.key_id, now=NOW + 30)  # a's memory refuses without a query
        b.touch(record.key_id, now=NOW + 61)  # b tried at +30: its memory refuses
        got = a.get(record.key_id)
        assert got is not None
        assert got.last_used_at == NOW
        b.touch(record.key_id, now=NOW + 91)  # last use is never more than 2 intervals stale
        got = a.get(record.key_id)
        assert got is not None
        assert got.last_used_at == NOW + 91
    finally:
        a.close()
        b.close()


def test_touch_skips_the_database_inside_the_interval(db: Path) -> None:
    store = SqliteApiKeyStore(db)
    _, record = _issue()
    store.add(record)
    store.touch(record.key_id, now=NOW)
    statements: list[str] = []
    conn = store._touch_pool.run(lambda c: c)  # the one touch borrows next
    conn.set_trace_callback(statements.append)
    for i in range(1, 50):
        store.touch(record.key_id, now=NOW + i)
    conn.set_trace_callback(None)
    store.close()
    assert statements == []


THREADS, KEYS_PER_THREAD, VERIFIES = 8, 5, 5


def test_many_threads_share_one_store(
    store: SqliteApiKeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Eight threads add, verify and revoke at once on a fresh file: every answer right.

    The barrier makes all eight open the new file at the same moment (where switching it
    to WAL used to fail at once with "database is locked"); nothing here depends on timing.
    """
    issued = [_issue(f"ws_{i % 3}") for i in range(THREADS * KEYS_PER_THREAD)]
    answers: list[tuple[str, str]] = []  # (key id, what the verify answered)
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def work(chunk: list[tuple[str, ApiKeyRecord]]) -> None:
        try:
            barrier.wait()
            for token, record in chunk:
                store.add(record)
                for j in range(VERIFIES):
                    answer = principal(token, store, now=NOW + j).credential_id
                    answers.append((record.key_id, str(answer)))
                store.revoke(record.key_id, now=NOW + 10)
                denied = identify(token, store, now=NOW + 11)
                assert denied.status == 401
                answers.append((record.key_id, denied.reason.value))
        except BaseException as exc:
            errors.append(exc)

    caplog.set_level(logging.WARNING, logger="illumichat_authz")
    threads = [threading.Thread(target=work, args=(issued[i::THREADS],)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # Every verify answered, and answered right; no 503 anywhere, not even a logged one
    # from a last-use write.
    expected = sorted(
        [(r.key_id, r.key_id) for _, r in issued] * VERIFIES
        + [(r.key_id, Reason.API_KEY_REVOKED.value) for _, r in issued]
    )
    assert sorted(answers) == expected
    assert caplog.records == []
    listed = store.list()
    assert len(listed) == THREADS * KEYS_PER_THREAD
    assert all(r.revoked_at == NOW + 10 for r in listed)
    # A last use is recorded unless the store was busy at each of the key's uses (touch
    # never waits); when recorded it is one of the uses.
    assert all(r.last_used_at is None or NOW <= r.last_used_at < NOW + VERIFIES for r in listed)


def _hold_write_lock(db: Path) -> sqlite3.Connection:
    """Another connection (another process, the CLI) in the middle of a write."""
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


def test_first_open_waits_for_a_writer_instead_of_failing(db: Path) -> None:
    # Switching the file to WAL while another connection writes is refused at once by
    # SQLite, whatever the busy timeout: the store must wait it out, not answer 503.
    blocker = _hold_write_lock(db)
    release = threading.Timer(0.2, blocker.rollback)
    release.start()
    store = SqliteApiKeyStore(db, timeout_s=10)
    try:
        assert store.get("nothing") is None
    finally:
        release.join()
        blocker.close()
        store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_writes_wait_out_a_busy_database_within_the_timeout(db: Path) -> None:
    store = SqliteApiKeyStore(db, timeout_s=10)
    store.get("nothing")  # the file exists, in WAL
    _, record = _issue()
    blocker = _hold_write_lock(db)
    release = threading.Timer(0.2, blocker.rollback)
    release.start()
    try:
        store.add(record)
        assert store.revoke(record.key_id, now=NOW) is True
    finally:
        release.join()
        blocker.close()
    # Past the timeout it is a 503 (fail closed), not a wait without end.
    impatient = SqliteApiKeyStore(db, timeout_s=0.05)
    blocker = _hold_write_lock(db)
    try:
        with pytest.raises(DependencyUnavailableError) as info:
            impatient.revoke(record.key_id, now=NOW)
        assert info.value.status == 503
    finally:
        blocker.close()
        impatient.close()
        store.close()


def test_verify_never_waits_for_someone_elses_write(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A last-use write that waited would hold this verify for the busy timeout and then
    # log a failure; it must skip at once instead, and record the next use.
    store = SqliteApiKeyStore(db, timeout_s=2)
    token, record = _issue()
    store.add(record)
    caplog.set_level(logging.DEBUG, logger="illumichat_authz")
    blocker = _hold_write_lock(db)
    try:
        assert principal(token, store, now=NOW).credential_id == record.key_id
    finally:
        blocker.rollback()
        blocker.close()
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    got = store.get(record.key_id)
    assert got is not None
    assert got.last_used_at is None
    principal(token, store, now=NOW + 1)
    got = store.get(record.key_id)
    assert got is not None
    assert got.last_used_at == NOW + 1
    store.close()


def _open_files(path: Path) -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(path.resolve()))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_thread_per_request_server_does_not_leak_connections(
    store: SqliteApiKeyStore, db: Path
) -> None:
    token, record = _issue()
    store.add(record)
    for i in range(40):  # ThreadingHTTPServer, wsgiref: a new thread for every request
        t = threading.Thread(target=lambda i=i: principal(token, store, now=NOW + i))
        t.start()
        t.join()
    assert _open_files(db) <= 10
    store.close()
    assert _open_files(db) == 0


def test_unusable_database_is_503_not_a_traceback(tmp_path: Path) -> None:
    store = SqliteApiKeyStore(tmp_path / "missing-dir" / "keys.sqlite3")
    with pytest.raises(DependencyUnavailableError) as info:
        store.get("abc")
    assert info.value.status == 503
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    broken = SqliteApiKeyStore(garbage)
    with pytest.raises(DependencyUnavailableError):
        broken.get("abc")
    broken.close()


class _Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def test_caching_store_bounds_revocation_delay_by_ttl(db: Path) -> None:
    clock = _Clock()
    inner = SqliteApiKeyStore(db)
    api = CachingApiKeyStore(inner, ttl_s=5, clock=clock)
    admin = SqliteApiKeyStore(db)
    token, record = _issue()
    admin.add(record)
    assert principal(token, api, now=clock.now).user_id == "user_1"
    admin.revoke(record.key_id, now=clock.now)
    clock.now += 4.9  # another process revoked: served from cache until the TTL ends
    assert principal(token, api, now=clock.now).user_id == "user_1"
    clock.now += 0.1
    assert identify(token, api, now=clock.now).reason is Reason.API_KEY_REVOKED
    admin.close()
    inner.close()


def test_caching_store_revocation_through_it_is_immediate(db: Path) -> None:
    clock = _Clock()
    inner = SqliteApiKeyStore(db)
    api = CachingApiKeyStore(inner, ttl_s=300, clock=clock)
    token, record = _issue()
    api.add(record)
    principal(token, api, now=clock.now)
    assert api.revoke(record.key_id, now=clock.now)
    assert identify(token, api, now=clock.now).reason is Reason.API_KEY_REVOKED
    inner.close()


def test_caching_store_does_not_cache_misses_and_is_bounded() -> None:
    inner = MemoryApiKeyStore()
    clock = _Clock()
    api = CachingApiKeyStore(inner, ttl_s=60, clock=clock, max_entries=3)
    assert api.get("madeUpKeyId1") is None
    records = [_issue()[1] for _ in range(5)]
    for r in records:
        inner.add(r)
        assert api.get(r.key_id) == r
    assert len(api._cache) == 3
    assert api.get("madeUpKeyId1") is None
    assert len(api._cache) == 3
