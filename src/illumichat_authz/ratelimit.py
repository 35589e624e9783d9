"""Rate limits on the ``limits`` library, and the headers that announce them.

A limit is a :class:`RateLimitSpec` (``"5/minute"``); a :class:`RateLimiter` counts hits
per key in a ``limits`` storage (``memory://`` for one process, ``redis://`` to share
counters between workers) and answers a :class:`RateLimitOutcome`.
:func:`rate_limit_headers` renders it as ``Retry-After`` (on a deny) and the IETF
``RateLimit`` / ``RateLimit-Policy`` fields of draft-ietf-httpapi-ratelimit-headers-11::

    RateLimit-Policy: "default";q=5;w=60
    RateLimit: "default";r=0;t=42

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
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import limits
import limits.aio.strategies
import limits.errors
import limits.storage
import limits.strategies

from illumichat_authz.errors import ConfigurationError, DependencyUnavailableError
from illumichat_authz.reasons import Reason

__all__ = [
    "MAX_KEY_CHARS",
    "STORAGE_SCHEMES",
    "RateLimitOutcome",
    "RateLimitSpec",
    "RateLimiter",
    "Strategy",
    "check_storage_uri",
    "rate_limit_headers",
]

logger = logging.getLogger("illumichat_authz.ratelimit")

Strategy = Literal["moving-window", "fixed-window"]

MAX_KEY_CHARS: Final = 200
#: How many hits between two sweeps of emptied moving-window keys in memory storage.
_SWEEP_EVERY: Final = 1024

_SPEC = re.compile(
    r"^\s*(?P<amount>[0-9]{1,9})\s*(?:/|\s+per\s+)\s*(?P<unit>second|minute|hour|day)s?\s*$",
    re.IGNORECASE,
)
_ITEMS: Final[dict[str, type[limits.RateLimitItem]]] = {
    "second": limits.RateLimitItemPerSecond,
    "minute": limits.RateLimitItemPerMinute,
    "hour": limits.RateLimitItemPerHour,
    "day": limits.RateLimitItemPerDay,
}
#: sf-string characters allowed in a policy name (RFC 9651 §3.3.3, minus the escapes).
_POLICY_NAME = re.compile(r"^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}$")


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    """``amount`` hits per ``window_s`` seconds; build with :meth:`parse`."""

    amount: int
    window_s: int
    item: limits.RateLimitItem = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> RateLimitSpec:
        """``"5/minute"``, ``"5 per minute"``, ``"10/second"``, ``"100/hour"``, ``"1000/day"``."""
        match = _SPEC.match(text) if isinstance(text, str) else None
        if match is None or int(match["amount"]) < 1:
            raise ConfigurationError(
                f"rate limit {text!r} is not '<positive count>/<second|minute|hour|day>'"
            )
        item = _ITEMS[match["unit"].lower()](int(match["amount"]))
        return cls(amount=item.amount, window_s=item.get_expiry(), item=item)

    def __str__(self) -> str:
        return f"{self.amount}/{self.item.GRANULARITY.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitOutcome:
    allowed: bool
    limit: int
    remaining: int
    #: Seconds until the window frees capacity again (0 when nothing is counted).
    reset_after_s: float


def rate_limit_headers(
    outcome: RateLimitOutcome, spec: RateLimitSpec, *, policy: str = "default"
) -> list[tuple[str, str]]:
    """``Retry-After`` on a deny, then ``RateLimit-Policy`` and ``RateLimit``.

    draft-ietf-httpapi-ratelimit-headers-11: ``RateLimit-Policy`` items carry ``q`` (the
    quota) and ``w`` (the window in seconds); ``RateLimit`` items carry ``r`` (remaining
    quota units) and ``t`` ("the number of seconds until the quota associated with the
    quota policy resets", a non-negative Integer). RFC 9110 §10.2.3: ``Retry-After`` is
    delay-seconds; we send at least 1 so clients never retry in a tight loop.
    """
    if not _POLICY_NAME.match(policy):
        raise ConfigurationError(f"rate limit policy name {policy!r} is not a valid sf-string")
    reset = max(0, math.ceil(outcome.reset_after_s))
    headers = [
        ("RateLimit-Policy", f'"{policy}";q={spec.amount};w={spec.window_s}'),
        ("RateLimit", f'"{policy}";r={max(0, outcome.remaining)};t={reset}'),
    ]
    if not outcome.allowed:
        headers.insert(0, ("Retry-After", str(max(1, reset))))
    return headers


def _bounded_key(key: str) -> str:
    if len(key) <= MAX_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _unavailable(exc: BaseException) -> DependencyUnavailableError:
    logger.warning("rate limit storage unavailable: %s", type(exc).__name__)
    return DependencyUnavailableError(
        "rate limit storage is unavailable", reason=Reason.AUTH_UNAVAILABLE
    )


#: Storage URI schemes supported here: one process's memory, or Redis (whose connects and
#: commands get bounded timeouts). ``limits`` knows more (MongoDB, memcached) that we do
#: not test or bound.
STORAGE_SCHEMES: Final = ("memory", "redis", "rediss", "redis+unix")
_REDIS_SCHEMES: Final = STORAGE_SCHEMES[1:]


def check_storage_uri(uri: str) -> str:
    """Return ``uri`` if its scheme is supported, else raise ``ValueError`` saying which are.

    Checked before ``limits`` sees the URI: for some schemes (``mongodb://`` without its
    driver) ``limits`` half-builds a storage whose destructor then prints a traceback.
    The message names the scheme alone, never the rest (it may hold a password).
    """
    scheme, sep, _ = uri.partition("://")
    if not sep or scheme.lower() not in STORAGE_SCHEMES:
        given = f"scheme {scheme + '://'!r}" if sep else "URI without a scheme"
        supported = ", ".join(f"{s}://" for s in STORAGE_SCHEMES)
        raise ValueError(f"unsupported storage {given}: use one of {supported}")
    return uri


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
        try:
            allowed = self._limiter.hit(spec.item, *ident)
            stats = self._limiter.get_window_stats(spec.item, *ident)
        except _STORAGE_ERRORS as exc:
            raise _unavailable(exc) from exc
        self._sweep()
        return self._outcome(allowed, stats, spec)

    async def ahit(self, key: str, spec: RateLimitSpec) -> RateLimitOutcome:
        """:meth:`hit` for async callers; awaits the storage for network backends."""
        if self._async_limiter is None:
            return self.hit(key, spec)
        ident = (self._namespace, _bounded_key(key))
        try:
            allowed = await self._async_limiter.hit(spec.item, *ident)
            stats = await self._async_limiter.get_window_stats(spec.item, *ident)
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
