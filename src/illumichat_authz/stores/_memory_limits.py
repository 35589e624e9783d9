"""``limits``' memory storage, its expiry done a few keys per hit instead of by a thread.

``limits``' ``MemoryStorage`` restarts a timer thread every 10 ms while hits come, and that
thread walks every key it holds with the GIL taken. Keys are client addresses, so an
attacker who brings many of them (a botnet, or the /64s of one /48) makes every request of
the process pay for the walk: with 100,000 keys a process decided 4.5x fewer requests a
second (docs/performance.md). Here no thread runs: each hit expires at most
:data:`EXPIRE_PER_HIT` keys whose time has come, oldest first, so a hit costs the same
whatever the number of keys. The counting is ``limits``' own; only the scheduling of its
expiry and its per-key locks are replaced. The locks are striped, so dropping a key never
drops a lock another thread is waiting on (``limits`` pops them, which can let two threads
into one key), and a fixed window's count is made whole under its lock (``limits`` reads
the counter before taking it, and lost a hit or two at a window's start in our tests).
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from typing import Any, Final

import limits.storage
import limits.storage.memory

__all__ = ["EXPIRE_PER_HIT", "InlineExpiryMemoryStorage"]

#: Keys due for expiry handled per hit; a hit queues at most one, so the queue drains.
EXPIRE_PER_HIT: Final = 4
_STRIPES: Final = 64


def _now() -> float:
    # The clock limits stamps its entries with, read where limits reads it (tests replace it).
    now: float = limits.storage.memory.time.time()  # type: ignore[attr-defined]
    return now


class _StripedLocks:
    """A fixed set of locks a key hashes onto: nothing to add or drop as keys come and go."""

    __slots__ = ("_stripes",)

    def __init__(self) -> None:
        self._stripes = tuple(threading.RLock() for _ in range(_STRIPES))

    def __getitem__(self, key: str) -> threading.RLock:
        return self._stripes[hash(key) % _STRIPES]

    def pop(self, key: str, default: Any = None) -> Any:
        return default

    def clear(self) -> None:
        return None


class InlineExpiryMemoryStorage(limits.storage.MemoryStorage):
    """``memory://`` for :class:`~illumichat_authz.stores.ratelimit.RateLimiter`.

    It declares no ``STORAGE_SCHEME``, so ``limits``' registry (and every other user of
    ``limits`` in the process) keeps its own ``memory://``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.timer.cancel()  # the one limits starts at construction
        self.locks = _StripedLocks()  # type: ignore[assignment]  # what limits uses of it
        #: (when, key) in the order they were stamped: a fixed window's end, or a moving
        #: window entry's expiry.
        self._due: deque[tuple[float, str]] = deque()

    # limits calls this (name-mangled) before every count; it would restart the thread.
    # The hits below expire instead, before they take a key's lock: expiring takes other
    # keys' locks, and two threads each holding one while waiting for the other's would
    # never finish.
    def _MemoryStorage__schedule_expiry(self) -> None:
        return None

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        self.expire_due(EXPIRE_PER_HIT)
        # limits reads (and may reset) the counter before it takes the key's lock, so two
        # threads at a window's start could both reset it: the whole count under the lock.
        with self.locks[key]:
            count: int = super().incr(key, expiry, amount)
        if count == amount:  # a new window: limits has just stamped its end
            self._due.append((self.expirations.get(key, 0.0), key))
        return count

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        self.expire_due(EXPIRE_PER_HIT)
        acquired: bool = super().acquire_entry(key, limit, expiry, amount)
        if acquired:
            self._due.append((_now() + expiry, key))
        return acquired

    def expire_due(self, at_most: int | None = None) -> int:
        """Drop what has expired among the first keys due (all of them if ``at_most`` is
        None): a fixed window's counter once its window is over, a moving window's entries
        once they have left it, and the key once it has none. Returns the keys looked at."""
        due, now, seen = self._due, _now(), 0
        while at_most is None or seen < at_most:
            try:
                when, key = entry = due.popleft()
            except IndexError:  # empty (another thread may have taken the last one)
                break
            if when > now:  # not due yet (or another thread took the one that was)
                due.appendleft(entry)
                break
            seen += 1
            with self.locks[key]:
                if self.expirations.get(key, now + 1.0) <= now:
                    self.storage.pop(key, None)
                    self.expirations.pop(key, None)
                entries = self.events.get(key)
                if entries is not None:
                    # Entries are newest first: those before ``live`` are still in the window.
                    # A new list, not one cut in place: limits reads a window's list
                    # without the lock, and must not see it shrink under it.
                    live = bisect.bisect_left(entries, -now, key=lambda e: -e.expiry)
                    if 0 < live < len(entries):
                        self.events[key] = entries[:live]
                    elif not live:
                        del self.events[key]
        return seen

    def reset(self) -> int | None:
        self._due.clear()
        cleared: int | None = super().reset()
        return cleared
