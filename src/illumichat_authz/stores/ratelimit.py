"""The rate limiter: hits counted per key in a ``limits`` storage (memory or Redis).

A :class:`RateLimiter` counts hits per key in a ``limits`` storage (``memory://`` for one
process, ``redis://`` to share counters between workers) and answers the pure
:class:`~illumichat_authz.ratelimit.RateLimitOutcome` for a
:class:`~illumichat_authz.ratelimit.RateLimitSpec`.

Fail closed: a storage that cannot answer (Redis down) raises
:class:`DependencyUnavailableError` (503); it never lets the request through uncounted.

Keys are attacker-influenced (client IPs), so memory must stay bounded. ``limits``'
memory storage drops fixed-window counters once their window has passed, and trims
moving-window entries, on a timer that runs only after a hit, and leaves each
moving-window key behind as an empty list; :class:`RateLimiter` sweeps expired keys away
every 1024 hits (see :meth:`RateLimiter.sweep`). Within one window, memory grows with the
number of distinct keys (at most ``amount`` entries each). Keys longer than
:data:`MAX_KEY_CHARS` are hashed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final, Literal

import limits
import limits.aio.strategies
import limits.errors
import limits.storage
import limits.strategies

from illumichat_authz.errors import ConfigurationError, DependencyUnavailableError
from illumichat_authz.ratelimit import (
    STORAGE_SCHEMES,
    RateLimitOutcome,
    RateLimitSpec,
    check_storage_uri,
)
from illumichat_authz.reasons import Reason

__all__ = ["MAX_KEY_CHARS", "RateLimiter", "Strategy"]

logger = logging.getLogger("illumichat_authz.stores.ratelimit")

Strategy = Literal["moving-window", "fixed-window"]

MAX_KEY_CHARS: Final = 200
#: How many hits between two sweeps of emptied moving-window keys in memory storage.
_SWEEP_EVERY: Final = 1024

_ITEMS: Final[dict[str, type[limits.RateLimitItem]]] = {
    "second": limits.RateLimitItemPerSecond,
    "minute": limits.RateLimitItemPerMinute,
    "hour": limits.RateLimitItemPerHour,
    "day": limits.RateLimitItemPerDay,
}
#: The storages whose connects and commands get bounded timeouts.
_REDIS_SCHEMES: Final = STORAGE_SCHEMES[1:]


def _bounded_key(key: str) -> str:
    if len(key) <= MAX_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _unavailable(exc: BaseException) -> DependencyUnavailableError:
    logger.warning("rate limit storage unavailable: %s", type(exc).__name__)
    return DependencyUnavailableError(
        "rate limit storage is unavailable", reason=Reason.AUTH_UNAVAILABLE
    )


#: What a failing storage raises: limits wraps the driver's errors when asked to.
_STORAGE_ERRORS: Final = (limits.errors.StorageError, OSError, TimeoutError)


class RateLimiter:
    """Counts hits per key; sync :meth:`hit` and async :meth:`ahit` share one outcome rule.

    ``storage_uri`` is a ``limits`` storage URI (``memory://``, ``redis://host:port/db``).
    For network storages :meth:`ahit` uses the matching ``limits.aio`` storage (redis via
    ``redis.asyncio``); for memory it calls the sync path, which never blocks on I/O.
    ``clock`` only computes ``reset_after_s`` (``limits`` reads the wall clock itself).
    ``timeout_s`` bounds each Redis connect and command; past it the hit is a 503.
    """

    def __init__(
        self,
        *,
        storage_uri: str = "memory://",
        strategy: Strategy = "moving-window",
        namespace: str = "illumichat",
        clock: Callable[[], float] = time.time,
        timeout_s: float = 1.0,
    ) -> None:
        strategies: dict[str, tuple[Any, Any]] = {
            "moving-window": (
                limits.strategies.MovingWindowRateLimiter,
                limits.aio.strategies.MovingWindowRateLimiter,
            ),
            "fixed-window": (
                limits.strategies.FixedWindowRateLimiter,
                limits.aio.strategies.FixedWindowRateLimiter,
            ),
        }
        if strategy not in strategies:
            raise ConfigurationError(f"rate limit strategy must be one of {sorted(strategies)}")
        sync_cls, async_cls = strategies[strategy]
        self._namespace = namespace
        self._clock = clock
        self._hits = 0
        # A hung Redis must not hang requests: bounded waits, then 503.
        try:
            check_storage_uri(storage_uri)
        except ValueError as exc:
            raise ConfigurationError(f"rate_limits.storage: {exc}") from None
        redis = storage_uri.partition("://")[0].lower() in _REDIS_SCHEMES
        timeouts: dict[str, Any] = (
            {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s} if redis else {}
        )
        try:
            self._storage = limits.storage.storage_from_string(
                storage_uri, wrap_exceptions=True, **timeouts
            )
            self._async_limiter: Any = None
            if redis:
                async_storage = limits.storage.storage_from_string(
                    f"async+{storage_uri}",
                    wrap_exceptions=True,
                    implementation="redispy",
                    **timeouts,
                )
                self._async_limiter = async_cls(async_storage)
        except limits.errors.ConfigurationError as exc:
            raise ConfigurationError(f"rate_limits.storage: {exc}") from None
        self._limiter = sync_cls(self._storage)
        # The limits item of each spec, built once: specs come from the route table, so
        # there are only as many as the table has rate-limited routes.
        self._items: dict[tuple[int, str], limits.RateLimitItem] = {}

    def _item(self, spec: RateLimitSpec) -> limits.RateLimitItem:
        key = (spec.amount, spec.unit)
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = _ITEMS[spec.unit](spec.amount)
        return item

    @property
    def storage(self) -> Any:
        """The underlying ``limits`` storage (for health checks and tests)."""
        return self._storage

    def _outcome(self, allowed: bool, stats: Any, spec: RateLimitSpec) -> RateLimitOutcome:
        reset_after = max(0.0, float(stats.reset_time) - self._clock())
        remaining = max(0, min(spec.amount, int(stats.remaining)))
        return RateLimitOutcome(
            allowed=bool(allowed),
            limit=spec.amount,
            remaining=remaining,
            reset_after_s=reset_after if remaining < spec.amount else 0.0,
        )

    def hit(self, key: str, spec: RateLimitSpec) -> RateLimitOutcome:
        """Count one hit for ``key`` under ``spec`` and say whether it is allowed."""
        ident = (self._namespace, _bounded_key(key))
        item = self._item(spec)
        try:
            allowed = self._limiter.hit(item, *ident)
            stats = self._limiter.get_window_stats(item, *ident)
        except _STORAGE_ERRORS as exc:
            raise _unavailable(exc) from exc
        self._sweep()
        return self._outcome(allowed, stats, spec)

    async def ahit(self, key: str, spec: RateLimitSpec) -> RateLimitOutcome:
        """:meth:`hit` for async callers; awaits the storage for network backends."""
        if self._async_limiter is None:
            return self.hit(key, spec)
        ident = (self._namespace, _bounded_key(key))
        item = self._item(spec)
        try:
            allowed = await self._async_limiter.hit(item, *ident)
            stats = await self._async_limiter.get_window_stats(item, *ident)
        except _STORAGE_ERRORS as exc:
            raise _unavailable(exc) from exc
        return self._outcome(allowed, stats, spec)

    def close(self) -> None:
        """Close the sync storage's connections (network storages only)."""
        client = getattr(self._storage, "storage", None)
        if client is not None and callable(getattr(client, "close", None)):
            client.close()

    async def aclose(self) -> None:
        """Close the async storage's connections; call it before the event loop ends."""
        if self._async_limiter is None:
            return
        bridge = getattr(self._async_limiter.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and callable(getattr(client, "aclose", None)):
            await client.aclose()

    def _sweep(self) -> None:
        """Every :data:`_SWEEP_EVERY` hits, drop memory-storage keys whose window is over.

        ``limits``' ``MemoryStorage`` expires keys on a timer that only runs after a hit,
        and leaves each moving-window key mapped to an empty list forever, so a stream of
        distinct client IPs would grow it without bound. This sweep removes keys whose
        newest moving-window entry, or whose fixed-window counter, has expired.
        """
        self._hits += 1
        if self._hits % _SWEEP_EVERY:
            return
        storage = self._storage
        events = getattr(storage, "events", None)
        expirations = getattr(storage, "expirations", None)
        counters = getattr(storage, "storage", None)
        locks = getattr(storage, "locks", None)
        if not isinstance(events, dict) or not isinstance(expirations, dict) or locks is None:
            return
        now = self._clock()
        # ``dict.copy`` is one C call that runs no Python code, so limits' own expiry
        # timer thread cannot change the dict under it (``list(d.items())`` can allocate,
        # collect garbage and let that thread run: "dictionary changed size").
        for key in events.copy():
            with locks[key]:  # the storage's own per-key lock: no hit is lost mid-update
                entries = events.get(key)
                # Entries are kept newest first; if the newest has expired, all have.
                expired = not entries or float(getattr(entries[0], "expiry", now)) <= now
                if expired:
                    events.pop(key, None)
            if expired:
                locks.pop(key, None)
        for key, expiry in expirations.copy().items():
            if expiry <= now:
                expirations.pop(key, None)
                if counters is not None:
                    counters.pop(key, None)
                locks.pop(key, None)

    def sweep(self) -> None:
        """Run the memory sweep now (it otherwise runs every 1024 hits)."""
        self._hits = _SWEEP_EVERY - 1
        self._sweep()
