"""Engines for a ``[database] url``: PostgreSQL through psycopg 3, SQLite through the stdlib.

Reads run in autocommit (one statement each, so one round trip: no BEGIN, no ROLLBACK on
the way back to the pool); each write is one transaction whose first statement bumps the
revision, so that under SQLite it takes the write lock before reading anything and waits
out a busy database instead of failing (see ``stores._sqlite``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as _create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from ...errors import ConfigurationError, DependencyUnavailableError
from ...reasons import Reason

__all__ = [
    "AsyncReaders",
    "create_engine",
    "dispose",
    "is_postgres",
    "reader",
    "unreachable",
]

_log = logging.getLogger("illumichat_authz.stores.sql")

#: The readers' session setting: a prepared read is planned once, not at every run. Its
#: statements are index lookups whose plan does not depend on the values; PostgreSQL's
#: default (``auto``) plans them afresh for each of the first five runs and, for a batch's
#: ``= ANY($1)``, keeps doing so, which costs more than the read itself.
GENERIC_PLANS = "-c plan_cache_mode=force_generic_plan"

#: How long a SQLite statement waits for another connection's write lock.
SQLITE_BUSY_TIMEOUT_S = 5.0


def create_engine(url: str, **options: Any) -> Engine:
    """An engine for ``url`` (``postgresql+psycopg://...``, ``sqlite:///path``)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(
            "not a database URL (e.g. 'postgresql+psycopg://user@host/db' or 'sqlite:///facts.db')"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", "asyncpg"):
            raise ConfigurationError(
                "database.url: use postgresql+psycopg:// (or postgresql+asyncpg:// for async hosts)"
            )
        # The sync side (the change feed, writes, sync decisions) always speaks psycopg;
        # an asyncpg URL names the driver of async reads only (AsyncReaders).
        sync_url = parsed.set(drivername="postgresql+psycopg")
        # Pre-ping: a write after a database restart gets a live connection, not the error
        # of a stale one (writes are rare; reads go through ``reader`` and retry instead).
        engine = _create_engine(
            sync_url, pool_size=8, max_overflow=8, pool_pre_ping=True, **options
        )
    elif backend == "sqlite":
        engine = _create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}, **options)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        raise ConfigurationError(f"{backend!r} is not supported (PostgreSQL or SQLite)")
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: readers never wait for the writer, nor the writer for readers.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


class AsyncReaders:
    """Async engines for an event loop's reads, one per loop (a connection of asyncpg or
    of psycopg's ``AsyncConnection`` belongs to the loop it was opened on).

    PostgreSQL only: ``get`` is ``None`` for SQLite, and when SQLAlchemy's asyncio
    support (greenlet) is not installed; the reads then run in a worker thread.
    """

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self._url = None if parsed.get_backend_name() != "postgresql" else parsed
        self._engines: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def get(self) -> Any:
        if self._url is None:
            return None
        loop = asyncio.get_running_loop()
        found = self._engines.get(loop)
        if found is None:
            try:
                import greenlet  # type: ignore[import-untyped]  # noqa: F401
                from sqlalchemy.ext.asyncio import create_async_engine
            except ImportError as exc:
                # Said once: async reads still work, in a worker thread, but an operator
                # who chose an async driver should know it is not in use.
                _log.warning(
                    "async database reads run in a worker thread: %s is not installed "
                    '(pip install "illumichat-authz[postgres]")',
                    exc.name,
                )
                self._url = None
                return None
            asyncpg = self._url.get_driver_name() == "asyncpg"
            found = self._engines[loop] = create_async_engine(
                self._url,
                isolation_level="AUTOCOMMIT",
                pool_reset_on_return=None,
                pool_size=8,
                max_overflow=8,
                connect_args=(
                    {"server_settings": {"plan_cache_mode": "force_generic_plan"}}
                    if asyncpg
                    else {"options": GENERIC_PLANS}
                ),
            )
        return found

    async def aclose(self) -> None:
        """Close the running loop's engine and its connections (before the loop ends)."""
        found = self._engines.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found.dispose()

    def close(self) -> None:
        """Forget the engines (connections of a loop not closed with ``aclose`` close with
        that loop's transports)."""
        for found in list(self._engines.values()):
            found.sync_engine.dispose(close=False)
        self._engines.clear()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def reader(engine: Engine) -> Engine:
    """The engine reads go through: autocommit, so each read is one statement and one round
    trip (no BEGIN, no ROLLBACK when the connection goes back to the pool).

    On PostgreSQL a pool of its own, made autocommit when each connection opens: switching
    a pooled connection's isolation level per checkout costs a round trip each way. SQLite
    shares the engine's pool (a ``sqlite://`` database lives in its connection).
    """
    if not is_postgres(engine):
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    found = _READERS.get(id(engine))
    if found is None or found[0] is not engine:
        made = _create_engine(
            engine.url,
            isolation_level="AUTOCOMMIT",
            pool_reset_on_return=None,
            pool_size=8,
            max_overflow=8,
            connect_args={"options": GENERIC_PLANS},
        )
        found = _READERS[id(engine)] = (engine, made)
    return found[1]


def dispose(engine: Engine) -> None:
    """Close ``engine``'s connections and those of its reader."""
    found = _READERS.pop(id(engine), None)
    if found is not None and found[0] is engine:
        found[1].dispose()
    engine.dispose()


#: id(engine) -> (engine, its reader): engines are few and live as long as the process.
_READERS: dict[int, tuple[Engine, Engine]] = {}


@contextlib.contextmanager
def unreachable() -> Iterator[None]:
    """A database error as :class:`DependencyUnavailableError`: the driver's first line of
    reason, never the URL (SQLAlchemy's messages may hold its parameters)."""
    try:
        yield
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else ""
        raise DependencyUnavailableError(
            f"the database is unavailable: {type(exc.orig).__name__}: {reason}"[:500],
            reason=Reason.FACTS_UNAVAILABLE,
        ) from None
