"""API key stores: :class:`SqliteApiKeyStore` (stdlib ``sqlite3``) and :class:`MemoryApiKeyStore`.

Both satisfy :class:`~illumichat_authz.credentials.apikeys.ApiKeyStore`. The SQL is kept
plain (one table, ``?`` placeholders aside) so the PostgreSQL store can reuse it.

``touch`` is throttled: at most one write per key per ``touch_interval_s`` (60 s by
default), remembered in memory and enforced again in the ``UPDATE``'s ``WHERE`` so that
several processes sharing one file do not multiply writes. Without this, every
authenticated request would become a database write.

Under threads (and processes) sharing one file, :class:`SqliteApiKeyStore` follows the
rules in :mod:`._sqlite`: WAL is set once, when the store first opens the file; every
write is a ``BEGIN IMMEDIATE`` transaction that waits out a busy database for
``timeout_s``; and ``touch``, the one write on the verify path, never waits: when the
database is busy it skips (the key's next use tries again), so no verify is held up or
turned into a 503 by someone else's write.
"""

from __future__ import annotations

import builtins
import json
import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from illumichat_authz.credentials.apikeys import ApiKeyRecord, ApiKeyStore
from illumichat_authz.errors import DependencyUnavailableError
from illumichat_authz.reasons import Reason

from ._sqlite import ConnectionPool, is_busy, retry_busy, write

__all__ = ["CachingApiKeyStore", "MemoryApiKeyStore", "SqliteApiKeyStore"]

_log = logging.getLogger("illumichat_authz.stores.api_keys")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS api_keys (
        key_id       TEXT PRIMARY KEY,
        digest       TEXT NOT NULL,
        user_id      TEXT NOT NULL,
        workspace    TEXT NOT NULL,
        scopes       TEXT,
        name         TEXT,
        created_at   DOUBLE PRECISION NOT NULL,
        expires_at   DOUBLE PRECISION,
        revoked_at   DOUBLE PRECISION,
        last_used_at DOUBLE PRECISION
    )""",
    "CREATE INDEX IF NOT EXISTS api_keys_workspace ON api_keys (workspace)",
    "CREATE INDEX IF NOT EXISTS api_keys_user_id ON api_keys (user_id)",
)
_COLUMNS = (
    "key_id, digest, user_id, workspace, scopes, name, "
    "created_at, expires_at, revoked_at, last_used_at"
)
_TOUCH_MEMORY = 10_000  # bound on the in-memory throttle table (keys, not requests)


def _encode_scopes(scopes: frozenset[str] | None) -> str | None:
    # NULL means "not narrowed"; '[]' means "no actions at all". Keep them apart.
    return None if scopes is None else json.dumps(sorted(scopes))


def _decode_scopes(text: str | None) -> frozenset[str] | None:
    return None if text is None else frozenset(json.loads(text))


def _row_to_record(row: tuple[Any, ...]) -> ApiKeyRecord:
    (key_id, digest, user_id, workspace, scopes, name, created, expires, revoked, used) = row
    return ApiKeyRecord(
        key_id=str(key_id),
        digest=bytes.fromhex(str(digest)),
        user_id=str(user_id),
        workspace=str(workspace),
        scopes=_decode_scopes(scopes),
        name=name,
        created_at=float(created),
        expires_at=None if expires is None else float(expires),
        revoked_at=None if revoked is None else float(revoked),
        last_used_at=None if used is None else float(used),
    )


class TouchThrottle:
    """Remembers when each key was last written, bounded (oldest forgotten first)."""

    def __init__(self, *, interval_s: float) -> None:
        self.interval_s = interval_s
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def due(self, key_id: str, now: float) -> bool:
        with self._lock:
            last = self._seen.get(key_id)
            if last is not None and now - last < self.interval_s:
                return False
            self._seen[key_id] = now
            self._seen.move_to_end(key_id)
            while len(self._seen) > _TOUCH_MEMORY:
                self._seen.popitem(last=False)
            return True

    def forget(self, key_id: str) -> None:
        """A write that was due did not happen: let the next use try again."""
        with self._lock:
            self._seen.pop(key_id, None)


class SqliteApiKeyStore:
    """API key records in a SQLite file, shared by threads; schema and WAL on first use."""

    def __init__(
        self,
        path: str | Path,
        *,
        touch_interval_s: float = 60.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self._timeout_s = timeout_s
        self._throttle = TouchThrottle(interval_s=touch_interval_s)
        self._init_lock = threading.Lock()
        self._initialized = False
        self._pool = ConnectionPool(lambda: self._open(timeout_s=timeout_s))
        # touch's own connections never wait for a lock (busy_timeout 0).
        self._touch_pool = ConnectionPool(lambda: self._open(timeout_s=0.0), max_idle=2)

    # -- connections -------------------------------------------------------------------

    def _open(self, *, timeout_s: float) -> sqlite3.Connection:
        # Autocommit (isolation_level=None): a read is one statement, a write the explicit
        # transaction of _sqlite.write. ``timeout`` is SQLite's busy_timeout.
        conn = sqlite3.connect(
            self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            with self._init_lock:
                if not self._initialized:
                    self._initialize(conn)
                    self._initialized = True
        except BaseException:
            conn.close()
            raise
        return conn

    def _initialize(self, conn: sqlite3.Connection) -> None:
        # The journal mode is stored in the file: set once here, not per connection. The
        # switch upgrades a read lock to a write lock, which SQLite refuses at once while
        # another connection (another store, another process) writes: retried by hand,
        # as is the schema (``conn`` may be one of touch's, which never wait).
        def wal() -> object:
            return conn.execute("PRAGMA journal_mode=WAL").fetchone()

        def schema() -> object:
            return write(conn, [(statement, ()) for statement in _SCHEMA])

        retry_busy(wal, timeout_s=self._timeout_s)
        retry_busy(schema, timeout_s=self._timeout_s)

    def _unavailable(self, exc: sqlite3.Error) -> DependencyUnavailableError:
        _log.error("API key store %s failed: %s", self.path, exc)
        return DependencyUnavailableError(
            "API key store unavailable", reason=Reason.AUTH_UNAVAILABLE
        )

    def _read(self, sql: str, params: Sequence[Any]) -> builtins.list[tuple[Any, ...]]:
        try:
            return self._pool.run(lambda conn: conn.execute(sql, params).fetchall())
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    def close(self) -> None:
        """Close the store's open connections (call at shutdown); a later use reopens."""
        self._pool.close()
        self._touch_pool.close()

    # -- ApiKeyStore -------------------------------------------------------------------

    def get(self, key_id: str) -> ApiKeyRecord | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,))  # noqa: S608
        return _row_to_record(rows[0]) if rows else None

    def add(self, record: ApiKeyRecord) -> None:
        values = (
            record.key_id,
            record.digest.hex(),
            record.user_id,
            record.workspace,
            _encode_scopes(record.scopes),
            record.name,
            record.created_at,
            record.expires_at,
            record.revoked_at,
            record.last_used_at,
        )
        insert = f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
        try:
            self._pool.run(lambda conn: write(conn, [(insert, values)]))
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"API key id {record.key_id} already exists") from exc
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    def list(
        self, *, workspace: str | None = None, user: str | None = None
    ) -> builtins.list[ApiKeyRecord]:
        where, params = [], []
        if workspace is not None:
            where.append("workspace = ?")
            params.append(workspace)
        if user is not None:
            where.append("user_id = ?")
            params.append(user)
        sql = f"SELECT {_COLUMNS} FROM api_keys"  # noqa: S608 - fixed column list
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, key_id"
        rows = self._read(sql, params)
        return [_row_to_record(row) for row in rows]

    def revoke(self, key_id: str, *, now: float) -> bool:
        revoke = "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?"
        try:
            (count,) = self._pool.run(lambda conn: write(conn, [(revoke, (now, key_id))]))
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return count > 0

    def touch(self, key_id: str, *, now: float) -> None:
        """Record use, at most once per interval, without ever waiting for a lock."""
        if not self._throttle.due(key_id, now):
            return
        touch = (
            "UPDATE api_keys SET last_used_at = ? WHERE key_id = ? "
            "AND (last_used_at IS NULL OR last_used_at <= ?)"
        )
        try:
            params = (now, key_id, now - self._throttle.interval_s)
            self._touch_pool.run(lambda conn: write(conn, [(touch, params)]))
        except sqlite3.Error as exc:
            self._throttle.forget(key_id)
            if not is_busy(exc):
                raise self._unavailable(exc) from exc
            _log.debug("API key %s: last use not recorded, the store is busy", key_id)


class MemoryApiKeyStore:
    """A dict-backed store for tests, demos and benchmarks (same throttled ``touch``)."""

    def __init__(self, *, touch_interval_s: float = 60.0) -> None:
        self._records: dict[str, ApiKeyRecord] = {}
        self._lock = threading.Lock()
        self._throttle = TouchThrottle(interval_s=touch_interval_s)
        #: How many times ``touch`` actually wrote (for tests of the throttle).
        self.writes = 0

    def get(self, key_id: str) -> ApiKeyRecord | None:
        return self._records.get(key_id)

    def add(self, record: ApiKeyRecord) -> None:
        with self._lock:
            if record.key_id in self._records:
                raise ValueError(f"API key id {record.key_id} already exists")
            self._records[record.key_id] = record

    def list(
        self, *, workspace: str | None = None, user: str | None = None
    ) -> builtins.list[ApiKeyRecord]:
        return sorted(
            (
                r
                for r in self._records.values()
                if (workspace is None or r.workspace == workspace)
                and (user is None or r.user_id == user)
            ),
            key=lambda r: (r.created_at, r.key_id),
        )

    def revoke(self, key_id: str, *, now: float) -> bool:
        with self._lock:
            record = self._records.get(key_id)
            if record is None:
                return False
            if record.revoked_at is None:
                self._records[key_id] = replace(record, revoked_at=now)
            return True

    def touch(self, key_id: str, *, now: float) -> None:
        if not self._throttle.due(key_id, now):
            return
        with self._lock:
            record = self._records.get(key_id)
            if record is not None:
                self._records[key_id] = replace(record, last_used_at=now)
                self.writes += 1


class CachingApiKeyStore:
    """Serves ``get`` hits from memory for ``ttl_s`` seconds (``[api_keys] cache_ttl_s``).

    Trade-off, stated plainly: a revocation made through *another* store instance (the
    CLI, another process) takes effect here after at most ``ttl_s``; one made through this
    instance takes effect at once. Only existing keys are cached (misses are not, so
    made-up key ids cannot fill the cache), at most ``max_entries`` of them, oldest
    first out. ``ttl_s=0`` disables caching. ``clock`` is injected for tests.
    """

    def __init__(
        self,
        inner: ApiKeyStore,
        *,
        ttl_s: float,
        clock: Callable[[], float],
        max_entries: int = 10_000,
    ) -> None:
        self.inner = inner
        self._ttl_s = ttl_s
        self._clock = clock
        self._max = max_entries
        self._cache: OrderedDict[str, tuple[float, ApiKeyRecord]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key_id: str) -> ApiKeyRecord | None:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key_id)
            if hit is not None and now - hit[0] < self._ttl_s:
                return hit[1]
        record = self.inner.get(key_id)
        with self._lock:
            if record is None or self._ttl_s <= 0:
                self._cache.pop(key_id, None)
            else:
                self._cache[key_id] = (now, record)
                self._cache.move_to_end(key_id)
                while len(self._cache) > self._max:
                    self._cache.popitem(last=False)
        return record

    def _forget(self, key_id: str) -> None:
        with self._lock:
            self._cache.pop(key_id, None)

    def add(self, record: ApiKeyRecord) -> None:
        self.inner.add(record)
        self._forget(record.key_id)

    def list(
        self, *, workspace: str | None = None, user: str | None = None
    ) -> builtins.list[ApiKeyRecord]:
        return self.inner.list(workspace=workspace, user=user)

    def revoke(self, key_id: str, *, now: float) -> bool:
        found = self.inner.revoke(key_id, now=now)
        self._forget(key_id)
        return found

    def touch(self, key_id: str, *, now: float) -> None:
        self.inner.touch(key_id, now=now)
