"""The change feed: keeps every :class:`~.facts.SqlFacts` cache of this process current.

On PostgreSQL it LISTENs for the notification each write sends (revision and changed keys)
and evicts those keys, within a millisecond of the commit. On any gap (a notification
missed while reconnecting, a payload too big to carry its keys) it catches up from the
change log, revision by revision: never a reload. And every ``poll_interval_s`` it reads
the revision anyway (one primary-key read), the backstop that bounds staleness when
notifications stop arriving, and the only mechanism on SQLite. Each successful check
confirms the caches fresh for ``max_staleness_s``; while none succeeds they stop serving
from memory once that time has passed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, select

from .engine import is_postgres, reader
from .schema import NOTIFY_CHANNEL, change_log, revision

__all__ = ["ChangeFeed", "FeedStatus", "Subscriber"]

_log = logging.getLogger("illumichat_authz.stores.sql.feed")
#: The longest the feed's thread waits before looking at its stop flag.
_WAKE_S = 0.2
#: Change-log rows read per catch-up query.
_CATCH_UP_BATCH = 5000


class Subscriber(Protocol):
    applied: int

    def apply(
        self,
        rev: int,
        keys: Iterable[tuple[str, ...]] | None,
        removed: Collection[tuple[str, ...]] = (),
    ) -> None:
        """Change ``rev`` touched ``keys`` (``None``: unknown); ``removed``: those of them
        that the change deleted (known from a notification; empty when catching up)."""
        ...

    def confirm(self, rev: int) -> None: ...
    def reset(self, rev: int) -> None: ...


@dataclass(frozen=True, slots=True)
class FeedStatus:
    #: The newest revision applied to the caches (``-1`` before the first check).
    applied: int
    #: The database's revision at the last successful check.
    database: int
    #: Seconds since the last successful check.
    age_s: float
    #: Whether notifications are being received (PostgreSQL and connected).
    listening: bool
    #: Why the last check failed, or ``None``.
    error: str | None


class ChangeFeed:
    """One thread per process: LISTEN (PostgreSQL) plus a poll of the revision."""

    def __init__(
        self,
        engine: Engine,
        subscribers: Iterable[Subscriber],
        *,
        poll_interval_s: float = 1.0,
        listen: bool = True,
    ) -> None:
        self.engine = reader(engine)
        self.subscribers = list(subscribers)
        self.poll_interval_s = poll_interval_s
        self.listen = listen and is_postgres(engine)
        self.applied = -1
        self._database = -1
        self._checked_at = 0.0
        self._listening = False
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one catch-up at a time

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> ChangeFeed:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="illumichat-authz-feed", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def status(self) -> FeedStatus:
        age = time.monotonic() - self._checked_at if self._checked_at else float("inf")
        return FeedStatus(self.applied, self._database, age, self._listening, self._error)

    # --- one check (the poll; also what tests and `serve`'s readiness call) ------------------
    def check(self) -> int:
        """Catch up with the database and confirm the caches: the revision now applied."""
        with self._lock:
            with self.engine.connect() as conn:
                db_rev = int(
                    conn.execute(select(revision.c.revision).where(revision.c.id == 1)).scalar_one()
                )
                if self.applied < 0 or db_rev < self.applied:
                    # First check, or a database restored to an earlier state: start over.
                    self._reset(db_rev)
                while self.applied < db_rev:
                    rows = conn.execute(
                        select(change_log.c.revision, change_log.c["keys"])
                        .where(change_log.c.revision > self.applied)
                        .where(change_log.c.revision <= db_rev)
                        .order_by(change_log.c.revision)
                        .limit(_CATCH_UP_BATCH)
                    ).all()
                    if not rows or int(rows[0][0]) != self.applied + 1:
                        _log.warning(
                            "change log has no row for revision %d (pruned?): cache reset",
                            self.applied + 1,
                        )
                        self._reset(db_rev)
                        break
                    for rev, keys in rows:
                        if int(rev) != self.applied + 1:
                            self._reset(db_rev)
                            break
                        self._apply(int(rev), _decode_keys(keys))
            self._database = db_rev
            self._checked_at = time.monotonic()
            self._error = None
            for sub in self.subscribers:
                sub.confirm(self.applied)
            return self.applied

    def notified(self, payload: str) -> None:
        """A notification's payload: apply it if it is the next change, else catch up."""
        try:
            message = json.loads(payload)
            rev = int(message["r"])
            keys = message.get("k")
            gone = [keys[int(i)] for i in message.get("d", ())] if isinstance(keys, list) else []
        except (ValueError, KeyError, TypeError, IndexError):
            _log.warning("unreadable change notification; catching up from the change log")
            self.check()
            return
        with self._lock:
            if rev <= self.applied:
                return
            if rev == self.applied + 1 and isinstance(keys, list):
                decoded = _decode_keys(keys)
                removed = _decode_keys(gone) if decoded is not None else None
                self._apply(rev, decoded, removed or ())
                for sub in self.subscribers:
                    sub.confirm(rev)  # only confirms a subscriber already at rev
                return
        self.check()

    # --- internals ------------------------------------------------------------------------
    def _apply(
        self,
        rev: int,
        keys: list[tuple[str, ...]] | None,
        removed: Collection[tuple[str, ...]] = (),
    ) -> None:
        for sub in self.subscribers:
            sub.apply(rev, keys, removed)
        self.applied = rev

    def _reset(self, rev: int) -> None:
        for sub in self.subscribers:
            sub.reset(rev)
        self.applied = rev

    def _run(self) -> None:
        backoff = min(0.05, self.poll_interval_s)
        while not self._stop.is_set():
            listener: Any = None
            try:
                if self.listen:
                    listener = self._listener()
                self.check()
                backoff = min(0.05, self.poll_interval_s)
                next_poll = time.monotonic() + self.poll_interval_s
                while not self._stop.is_set():
                    # Waits of at most _WAKE_S, so that stop() never waits for a poll.
                    wait = max(0.0, min(_WAKE_S, next_poll - time.monotonic()))
                    if listener is not None:
                        for note in listener.notifies(timeout=wait):
                            self.notified(note.payload)
                            if self._stop.is_set():
                                break
                    else:
                        self._stop.wait(wait)
                    if time.monotonic() >= next_poll:
                        self.check()
                        next_poll = time.monotonic() + self.poll_interval_s
            except Exception as exc:  # the database is away: retry, staleness runs out
                self._listening = False
                self._error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                _log.warning("change feed: %s; retrying in %.2fs", self._error, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, max(self.poll_interval_s, 0.05))
            finally:
                self._listening = False
                if listener is not None:
                    with contextlib.suppress(Exception):  # already broken
                        listener.close()

    def _listener(self) -> Any:
        """A connection of its own, out of the pool, in autocommit, LISTENing."""
        raw = self.engine.raw_connection()
        conn = raw.driver_connection
        raw.detach()  # ours until closed: never lent to a reader
        if conn is None:
            raise RuntimeError("the driver gave no connection to LISTEN on")
        conn.autocommit = True
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        self._listening = True
        return conn


def _decode_keys(raw: Any) -> list[tuple[str, ...]] | None:
    try:
        keys = json.loads(raw) if isinstance(raw, str) else raw
        return [tuple(str(part) for part in key) for key in keys]
    except (ValueError, TypeError):
        return None  # unknown: the subscribers drop everything
