"""SqliteApiKeyStore against a real SQLite file: threads, two instances, throttled touch."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from illumichat_authz.credentials.apikey_store import (
    CachingApiKeyStore,
    MemoryApiKeyStore,
    SqliteApiKeyStore,
)
from illumichat_authz.credentials.apikeys import (
    ApiKeyRecord,
    authenticate_api_key,
    issue_api_key,
)
from illumichat_authz.errors import CredentialError, DependencyUnavailableError
from illumichat_authz.reasons import Reason

NOW = 1_800_000_000.0


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
        assert authenticate_api_key(token, api, now=NOW).credential_id == record.key_id
        assert admin.revoke(record.key_id, now=NOW + 1) is True
        with pytest.raises(CredentialError) as info:
            authenticate_api_key(token, api, now=NOW + 1)
        assert info.value.reason is Reason.API_KEY_REVOKED
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
    conn = store._connect()
    conn.set_trace_callback(statements.append)
    for i in range(1, 50):
        store.touch(record.key_id, now=NOW + i)
    conn.set_trace_callback(None)
    store.close()
    assert statements == []


def test_many_threads_share_one_store(store: SqliteApiKeyStore) -> None:
    issued = [_issue(f"ws_{i % 3}") for i in range(40)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(chunk: list[tuple[str, ApiKeyRecord]]) -> None:
        try:
            barrier.wait()
            for token, record in chunk:
                store.add(record)
                for j in range(5):
                    p = authenticate_api_key(token, store, now=NOW + j)
                    assert p.credential_id == record.key_id
                store.revoke(record.key_id, now=NOW + 10)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(issued[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    listed = store.list()
    assert len(listed) == 40
    assert all(r.revoked_at == NOW + 10 and r.last_used_at == NOW for r in listed)


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
    assert authenticate_api_key(token, api, now=clock.now).user_id == "user_1"
    admin.revoke(record.key_id, now=clock.now)
    clock.now += 4.9  # another process revoked: served from cache until the TTL ends
    assert authenticate_api_key(token, api, now=clock.now).user_id == "user_1"
    clock.now += 0.1
    with pytest.raises(CredentialError) as info:
        authenticate_api_key(token, api, now=clock.now)
    assert info.value.reason is Reason.API_KEY_REVOKED
    admin.close()
    inner.close()


def test_caching_store_revocation_through_it_is_immediate(db: Path) -> None:
    clock = _Clock()
    inner = SqliteApiKeyStore(db)
    api = CachingApiKeyStore(inner, ttl_s=300, clock=clock)
    token, record = _issue()
    api.add(record)
    authenticate_api_key(token, api, now=clock.now)
    assert api.revoke(record.key_id, now=clock.now)
    with pytest.raises(CredentialError) as info:
        authenticate_api_key(token, api, now=clock.now)
    assert info.value.reason is Reason.API_KEY_REVOKED
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
