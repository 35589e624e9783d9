"""SQLite under threads: a bounded connection pool, immediate write transactions, busy retries.

The SQLite rules these helpers follow (https://sqlite.org/lang_transaction.html,
https://sqlite.org/wal.html):

* ``sqlite3.connect(timeout=...)`` is ``sqlite3_busy_timeout``: a statement that finds the
  database locked retries for that long before ``database is locked``.
* Except when waiting could deadlock: a transaction that has already read and then wants
  to write ("if some other database connection has already modified the database ...
  the upgrade to a write transaction fails with SQLITE_BUSY") fails at once, busy
  timeout or not. Writes therefore start with ``BEGIN IMMEDIATE``, which takes the write
  lock before reading anything and so does wait. Switching a file to WAL is such an
  upgrade too, so :func:`retry_busy` waits it out by hand.
* In WAL mode readers never wait for writers nor writers for readers.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, TypeVar

__all__ = ["ConnectionPool", "is_busy", "retry_busy", "write"]

_T = TypeVar("_T")
#: Primary result codes (the low byte of the extended code).
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
_RETRY_PAUSE_S: Final = 0.005


def is_busy(exc: sqlite3.Error) -> bool:
    """``SQLITE_BUSY``/``SQLITE_LOCKED`` in any extended form: another connection holds a lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


def retry_busy(operation: Callable[[], _T], *, timeout_s: float) -> _T:
    """Run ``operation``, retrying while it fails busy, for at most ``timeout_s``.

    Only for the statements SQLite will not wait on by itself (see the module docstring).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return operation()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(_RETRY_PAUSE_S)


def write(conn: sqlite3.Connection, statements: Iterable[tuple[str, Sequence[Any]]]) -> list[int]:
    """Run ``statements`` as one ``BEGIN IMMEDIATE`` transaction; their row counts.

    ``conn`` is in autocommit mode (``isolation_level=None``), so the transaction is ours.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        counts = [conn.execute(sql, params).rowcount for sql, params in statements]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return counts


class ConnectionPool:
    """Connections lent to one thread at a time; at most ``max_idle`` kept open between uses.

    A pool rather than one connection per thread: a server that starts a thread per
    request (``ThreadingHTTPServer``, ``wsgiref``) would otherwise leave one open file per
    thread it ever ran. A connection whose use raised is closed, not lent again.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], *, max_idle: int = 8) -> None:
        self._connect = connect
        self._max_idle = max_idle
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close the idle connections (at shutdown, when none is lent out)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
