"""The rate limiter: hits counted per key in a ``limits`` storage (memory or Redis).

A :class:`RateLimiter` counts hits per key in a ``limits`` storage (``memory://`` for one
process, ``redis://`` to share counters between workers) and answers the pure
:class:`~illumichat_authz.ratelimit.RateLimitOutcome` for a
:class:`~illumichat_authz.ratelimit.RateLimitSpec`.

Fail closed: a storage that cannot answer (Redis down) raises
:class:`DependencyUnavailableError` (503); it never lets the request through uncounted.

On Redis a hit is one round trip: the atomic admission (``limits``' own Lua script) and
the window read for the headers are written together on one connection
(:class:`_RedisTrip`); ``limits`` alone would make them two. The key names the strategy,
so instances that disagree on it count apart instead of failing on each other's keys
(Redis' ``WRONGTYPE``).

Keys are attacker-influenced (client IPs), so memory must stay bounded, and so must the
cost of expiring it: ``memory://`` is :class:`InlineExpiryMemoryStorage`, ``limits``' memory
storage with its expiry done a few keys per hit rather than by a thread that walks them all.
Within one window, memory grows with the number of distinct keys (at most ``amount``
entries each). Keys longer than :data:`MAX_KEY_CHARS` are hashed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
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
from illumichat_authz.stores._memory_limits import InlineExpiryMemoryStorage

__all__ = ["MAX_KEY_CHARS", "RateLimiter", "Strategy"]

logger = logging.getLogger("illumichat_authz.stores.ratelimit")

Strategy = Literal["moving-window", "fixed-window"]

MAX_KEY_CHARS: Final = 200

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


#: An outage fails every hit: one warning per 10 s, with how many failed since the last.
_WARN_EVERY_S: Final = 10.0
_warned = [float("-inf"), 0]  # [when last logged (monotonic), failures not yet logged]


def _unavailable(exc: BaseException) -> DependencyUnavailableError:
    _warned[1] += 1
    now = time.monotonic()
    if now - _warned[0] >= _WARN_EVERY_S:
        logger.warning(
            "rate limit storage unavailable: %s (%d failed hits since the last warning)",
            type(exc).__name__,
            _warned[1],
        )
        _warned[0], _warned[1] = now, 0
    return DependencyUnavailableError(
        "rate limit storage is unavailable", reason=Reason.AUTH_UNAVAILABLE
    )


#: What a failing storage raises: limits wraps the driver's errors when asked to.
_STORAGE_ERRORS: Final = (limits.errors.StorageError, OSError, TimeoutError)

_STRATEGIES: Final[dict[str, tuple[Any, Any]]] = {
    "moving-window": (
        limits.strategies.MovingWindowRateLimiter,
        limits.aio.strategies.MovingWindowRateLimiter,
    ),
    "fixed-window": (
        limits.strategies.FixedWindowRateLimiter,
        limits.aio.strategies.FixedWindowRateLimiter,
    ),
}


class _RedisTrip:
    """One hit on Redis in one round trip: the admission and the window read, together.

    Both are ``limits``' own Lua scripts (moving window) or its counter script and the
    key's TTL (fixed window), called by the SHA ``limits`` registered them under and with
    the arguments ``limits`` passes them, so the counting is ``limits``' exactly; only the
    two round trips become one. The admission is atomic on its own; a hit of another
    instance between the two commands can only make ``remaining`` one smaller.

    The two commands are written on one pooled redis-py connection and both replies read
    (:meth:`run`, :meth:`arun`), which is what redis-py's pipeline does underneath, less
    its per-call machinery (retries, observability hooks, command stack): 5-8 µs a hit
    (docs/performance.md), and a failed trip is not retried past the timeout. A
    connection that fails or is cancelled mid-trip is disconnected before it goes back
    to the pool, so no reply is left for the next hit.

    A server without the scripts (just started, restarted, ``SCRIPT FLUSH``) answers
    NOSCRIPT; what did not run is then left ``None`` for ``limits``' own calls, which load
    the scripts (a hit that did run is never counted twice).
    """

    __slots__ = ("allowed", "ident", "item", "key", "moving", "now", "stats", "storage")

    def __init__(self, storage: Any, item: Any, ident: tuple[str, ...], moving: bool) -> None:
        self.storage = storage  # limits' sync RedisStorage or its async redis-py bridge
        self.item = item
        self.ident = ident
        self.moving = moving
        self.key: str = storage.prefixed_key(item.key_for(*ident))
        self.now = 0.0
        self.allowed: bool | None = None
        self.stats: tuple[float, int] | None = None

    def commands(self) -> list[tuple[bytes, ...]]:
        """The hit's two commands, encoded as redis-py's encoder would encode them."""
        item, storage = self.item, self.storage
        key = self.key.encode("utf-8", "surrogatepass")
        amount, expiry = b"%d" % item.amount, item.get_expiry()
        self.now = time.time()  # the clock limits' scripts are given
        if self.moving:
            acquire = storage.lua_acquire_moving_window.sha.encode()
            window = storage.lua_moving_window.sha.encode()
            return [
                (b"EVALSHA", acquire, b"1", key, repr(self.now).encode(), amount,
                 b"%d" % expiry, b"1"),
                (b"EVALSHA", window, b"1", key, repr(self.now - expiry).encode(), amount),
            ]  # fmt: skip
        incr = storage.lua_incr_expire.sha.encode()
        return [(b"EVALSHA", incr, b"1", key, b"%d" % expiry, b"1"), (b"TTL", key)]

    def run(self, client: Any) -> None:
        """The round trip on a connection of ``client``'s pool (sync redis-py)."""
        pool = client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command(conn.pack_commands(self.commands()))
            replies = [_reply(conn), _reply(conn)]
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        self.read(replies)

    async def arun(self, client: Any) -> None:
        """:meth:`run` on ``redis.asyncio``."""
        pool = client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(conn.pack_commands(self.commands()))
            replies = [await _areply(conn), await _areply(conn)]
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)
        self.read(replies)

    def read(self, results: list[Any]) -> None:
        """The two replies: an error other than NOSCRIPT is the storage's."""
        import redis.exceptions

        hit, window = results
        for answer in (hit, window):
            if isinstance(answer, Exception) and not isinstance(
                answer, redis.exceptions.NoScriptError
            ):
                raise answer
        amount = self.item.amount
        if self.moving:
            if not isinstance(hit, Exception):
                self.allowed = bool(hit)
            if not isinstance(window, Exception):
                start, count = (float(window[0]), int(window[1])) if window else (self.now, 0)
                self.stats = (start + self.item.get_expiry(), amount - count)
        elif not isinstance(hit, Exception):
            count = int(hit)
            self.allowed = count <= amount
            self.stats = (max(int(window), 0) + self.now, amount - count)


def _reply(conn: Any) -> Any:
    """One reply; an error reply is returned (the other reply must still be read)."""
    import redis.exceptions

    try:
        return conn.read_response()
    except redis.exceptions.ResponseError as exc:
        return exc


async def _areply(conn: Any) -> Any:
    import redis.exceptions

    try:
        return await conn.read_response()
    except redis.exceptions.ResponseError as exc:
        return exc


#: Connections per pool (redis-py's default of 100 made the 101st concurrent hit a 503).
#: Threads are few, so a sync pool this large is never full; an event loop can start any
#: number of hits at once, so on a plain server its hits wait (up to the timeout) for one
#: of :data:`_ASYNC_POOLED` connections. Sentinel's and Cluster's async pools cannot wait.
_CONNECTIONS: Final = 1000
_ASYNC_POOLED: Final = 64


def _async_pool(uri: str, timeout_s: float) -> dict[str, Any]:
    """An async pool for a plain server that makes a burst wait its turn."""
    import redis.asyncio

    url = "unix" + uri[len("redis+unix") :] if uri.lower().startswith("redis+unix") else uri
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=_ASYNC_POOLED,
        timeout=timeout_s,  # the wait for a free connection
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    return {"connection_pool": pool}


def _has_scripts(storage: Any) -> bool:
    names = ("lua_acquire_moving_window", "lua_moving_window", "lua_incr_expire")
    return hasattr(storage, "prefixed_key") and all(
        isinstance(getattr(getattr(storage, n, None), "sha", None), str) for n in names
    )


def _clients(storage: Any) -> list[Any]:
    """The Redis clients a ``limits`` storage (or async bridge) holds: the server's, or a
    Sentinel's master and replica clients and its connections to the sentinels."""
    found = [
        getattr(storage, name, None) for name in ("storage", "storage_slave", "storage_replica")
    ]
    found += list(getattr(getattr(storage, "sentinel", None), "sentinels", ()))
    return [c for c in found if c is not None and hasattr(c, "close")]


class RateLimiter:
    """Counts hits per key; sync :meth:`hit` and async :meth:`ahit` share one outcome rule.

    ``storage_uri`` is a ``limits`` storage URI (``memory://``, ``redis://host:port/db``,
    ``redis+sentinel://host:port,host:port/service``, ``redis+cluster://host:port,...``).
    For Redis :meth:`ahit` uses the matching ``limits.aio`` storage on ``redis.asyncio``;
    for memory it calls the sync path, which never blocks on I/O. ``clock`` only computes
    ``reset_after_s`` (``limits`` reads the wall clock itself). ``timeout_s`` bounds each
    Redis connect and command; past it the hit is a 503.
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
        classes = _STRATEGIES.get(strategy)
        if classes is None:
            raise ConfigurationError(f"rate limit strategy must be one of {sorted(_STRATEGIES)}")
        self._classes = classes
        self._moving = strategy == "moving-window"
        # The strategy is in every key: limits keeps a moving window as a list and a fixed
        # one as a counter, so two strategies on one key would fail each other's hits.
        self._namespace = (namespace, "moving" if self._moving else "fixed")
        self._clock = clock
        try:
            check_storage_uri(storage_uri)
        except ValueError as exc:
            raise ConfigurationError(f"rate_limits.storage: {exc}") from None
        self._uri = storage_uri
        scheme = storage_uri.partition("://")[0].lower()
        self._redis = scheme in _REDIS_SCHEMES
        # A cluster routes each key to its own node: there a hit stays limits' two calls.
        self._one_trip = self._redis and scheme != "redis+cluster"
        # A hung Redis must not hang requests: bounded waits, then 503.
        self._options: dict[str, Any] = {}
        self._async_options: dict[str, Any] = {}
        self._pools: list[Any] = []  # pools of our own, closed with the limiter
        self._errors: tuple[type[BaseException], ...] = _STORAGE_ERRORS
        if self._redis:
            import redis.exceptions

            bounded = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
            self._options = self._async_options = {**bounded, "max_connections": _CONNECTIONS}
            if "sentinel" in scheme:
                self._options = self._async_options = {**self._options, "sentinel_kwargs": bounded}
            elif scheme != "redis+cluster":
                self._async_options = _async_pool(storage_uri, timeout_s)
                self._pools = [self._async_options["connection_pool"]]
            # A cluster's "no node reachable" is not a RedisError.
            self._errors = (
                *_STORAGE_ERRORS,
                redis.exceptions.RedisError,
                redis.exceptions.RedisClusterException,
            )
        self._lock = threading.Lock()
        self._storage: Any = None
        self._limiter: Any = None
        self._async_limiter: Any = None
        if self._redis:
            self._async_limiter = classes[1](
                self._build(f"async+{storage_uri}", self._async_options, implementation="redispy")
            )
        # A cluster client reads the cluster's slots when it is made: made at the first hit,
        # so a cluster that is down at start is that hit's 503, not a failed start.
        if scheme != "redis+cluster":
            self._sync_limiter()
        if self._one_trip and not (
            _has_scripts(self._storage) and _has_scripts(self._async_limiter.storage.bridge)
        ):
            self._one_trip = False  # a limits without the scripts we call: its own calls
        # The limits item of each spec, built once: specs come from the route table, so
        # there are only as many as the table has rate-limited routes.
        self._items: dict[tuple[int, str], limits.RateLimitItem] = {}

    def _build(self, uri: str, options: dict[str, Any], **extra: Any) -> Any:
        try:
            return limits.storage.storage_from_string(uri, wrap_exceptions=True, **options, **extra)
        except limits.errors.ConfigurationError as exc:
            raise ConfigurationError(f"rate_limits.storage: {exc}") from None

    def _sync_limiter(self) -> Any:
        limiter = self._limiter
        if limiter is None:
            with self._lock:
                if self._limiter is None:
                    self._storage = (
                        self._build(self._uri, self._options)
                        if self._redis
                        else InlineExpiryMemoryStorage()
                    )
                    self._limiter = self._classes[0](self._storage)
                limiter = self._limiter
        return limiter

    def _item(self, spec: RateLimitSpec) -> limits.RateLimitItem:
        key = (spec.amount, spec.unit)
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = _ITEMS[spec.unit](spec.amount)
        return item

    @property
    def storage(self) -> Any:
        """The underlying ``limits`` storage (for health checks and tests)."""
        self._sync_limiter()
        return self._storage

    def _outcome(
        self, allowed: bool, reset_time: float, remaining: int, spec: RateLimitSpec
    ) -> RateLimitOutcome:
        reset_after = max(0.0, float(reset_time) - self._clock())
        remaining = max(0, min(spec.amount, int(remaining)))
        return RateLimitOutcome(
            allowed=bool(allowed),
            limit=spec.amount,
            remaining=remaining,
            reset_after_s=reset_after if remaining < spec.amount else 0.0,
        )

    def hit(self, key: str, spec: RateLimitSpec) -> RateLimitOutcome:
        """Count one hit for ``key`` under ``spec`` and say whether it is allowed."""
        ident = (*self._namespace, _bounded_key(key))
        item = self._item(spec)
        try:
            limiter = self._sync_limiter()
            if self._one_trip:
                trip = _RedisTrip(self._storage, item, ident, self._moving)
                trip.run(self._storage.get_connection())
                if trip.allowed is None:  # limits must (re)load its scripts: its own calls
                    trip.allowed = limiter.hit(item, *ident)
                if trip.stats is None:
                    trip.stats = limiter.get_window_stats(item, *ident)
                allowed, stats = trip.allowed, trip.stats
            else:
                allowed = limiter.hit(item, *ident)
                stats = limiter.get_window_stats(item, *ident)
        except self._errors as exc:
            raise _unavailable(exc) from exc
        return self._outcome(allowed, stats[0], stats[1], spec)

    async def ahit(self, key: str, spec: RateLimitSpec) -> RateLimitOutcome:
        """:meth:`hit` for async callers; awaits the storage for network backends."""
        limiter = self._async_limiter
        if limiter is None:
            return self.hit(key, spec)
        ident = (*self._namespace, _bounded_key(key))
        item = self._item(spec)
        try:
            bridge = limiter.storage.bridge
            trip = _RedisTrip(bridge, item, ident, self._moving)
            if self._one_trip:
                await trip.arun(bridge.get_connection())
            if trip.allowed is None:
                trip.allowed = await limiter.hit(item, *ident)
            if trip.stats is None:
                trip.stats = await limiter.get_window_stats(item, *ident)
        except self._errors as exc:
            raise _unavailable(exc) from exc
        return self._outcome(trip.allowed, trip.stats[0], trip.stats[1], spec)

    def close(self) -> None:
        """Close the sync storage's connections (network storages only)."""
        for client in _clients(self._storage):
            client.close()

    async def aclose(self) -> None:
        """Close the async storage's connections; call it before the event loop ends."""
        if self._async_limiter is None:
            return
        for client in _clients(getattr(self._async_limiter.storage, "bridge", None)):
            await client.aclose()
        for pool in self._pools:
            await pool.disconnect()

    def sweep(self) -> None:
        """Expire now every memory-storage key that is due (hits otherwise do a few each)."""
        if isinstance(self._storage, InlineExpiryMemoryStorage):
            self._storage.expire_due()
