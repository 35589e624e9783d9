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
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
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
    thread it ever ran. A connection whose use raised is closed, not lent again. No lock:
    "Deques support thread-safe ... appends and pops from either side" (``collections``
    docs); under a race the bound may be passed by a connection or two, which is harmless.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], *, max_idle: int = 8) -> None:
        self._connect = connect
        self._max_idle = max_idle
        self._idle: deque[sqlite3.Connection] = deque()

    def run(self, operation: Callable[[sqlite3.Connection], _T]) -> _T:
        """``operation`` on a lent connection (a plain call: a ``with`` costs more than a
        primary-key lookup)."""
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self._connect()
        try:
            result = operation(conn)
        except BaseException:
            conn.close()
            raise
        if len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.close()
        return result

    def close(self) -> None:
        """Close the idle connections (at shutdown, when none is lent out)."""
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return
            conn.close()
