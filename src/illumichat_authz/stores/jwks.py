"""The tenant's JWKS: fetched over https and cached, surviving outages and refresh storms.

Parsing a JWKS document is pure and lives in :mod:`illumichat_authz.credentials.jwk`; here
are the I/O (:class:`UrllibJwksFetcher`, behind the :class:`JwksFetcher` protocol) and
the cache policy.

The cache policy is written once, as two pure steps over an immutable snapshot:
``_plan`` (do we have a key, and may we fetch?) and ``_settle`` (after any fetch: the key,
or the error). The sync (:meth:`JwksCache.get_key`) and async (:meth:`JwksCache.aget_key`)
entry points only differ in how they run the single-flight fetch in between: the sync one
under a thread lock, the async one in :func:`asyncio.to_thread` shared by every waiter.

Rules (each guards a failure seen in real JWKS caches):

* Keys are parsed once, at fetch time; only public signing keys whose ``kty``/``crv``/
  ``alg``/``use``/``key_ops`` fit an asymmetric JWS algorithm are kept (at most
  ``max_keys``). The cache is never keyed by a caller-chosen ``kid``.
* Keys older than ``ttl_s`` are refreshed; a ``kid`` we do not hold triggers a refresh, but
  no more than one fetch attempt (success or failure) happens per ``min_refresh_s``.
* A failed fetch (network, status, size, malformed JSON, no usable key) never replaces the
  keys we hold; they keep serving until ``max_stale_s`` after the last good fetch.
* No key to be had at all: :class:`DependencyUnavailableError` (503 ``auth_unavailable``).
  A ``kid`` absent from a JWKS the tenant just served: :class:`CredentialError` (401).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

from illumichat_authz.credentials.jwk import DEFAULT_MAX_JWKS_BYTES, JwkKey, parse_jwks
from illumichat_authz.errors import ConfigurationError, CredentialError, DependencyUnavailableError
from illumichat_authz.net import is_loopback_host
from illumichat_authz.reasons import Reason
from illumichat_authz.request import is_decimal

__all__ = ["JwksCache", "JwksFetcher", "UrllibJwksFetcher"]

logger = logging.getLogger("illumichat_authz.stores.jwks")


class JwksFetcher(Protocol):
    """Fetches the raw JWKS document. Raises (anything) on any failure."""

    def fetch(self, url: str, *, timeout_s: float) -> bytes: ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A JWKS URL is configuration; a redirect elsewhere is not followed (it is a failure)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class UrllibJwksFetcher:
    """Stdlib fetcher: https (plain http only to loopback), no redirects, size-capped."""

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_JWKS_BYTES, trust_env: bool = True) -> None:
        self._max_bytes = max_bytes
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        self._direct = urllib.request.build_opener(urllib.request.ProxyHandler({}), *handlers)
        if trust_env:
            self._opener = urllib.request.build_opener(*handlers)
        else:
            self._opener = self._direct

    def fetch(self, url: str, *, timeout_s: float) -> bytes:
        parts = urlsplit(url)
        host = parts.hostname or ""
        loopback = is_loopback_host(host)
        if not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
            raise ValueError("JWKS URL must be https (plain http only for loopback hosts)")
        request = urllib.request.Request(  # noqa: S310 - scheme checked just above
            url, headers={"Accept": "application/json", "User-Agent": "illumichat-authz"}
        )
        opener = self._direct if loopback else self._opener
        with opener.open(request, timeout=timeout_s) as response:
            if response.status != 200:
                raise ValueError(f"JWKS endpoint answered {response.status}, not 200")
            declared = response.headers.get("Content-Length")
            if declared is not None and is_decimal(declared) and int(declared) > self._max_bytes:
                raise ValueError("JWKS response too large")
            body: bytes = response.read(self._max_bytes + 1)
        if len(body) > self._max_bytes:
            raise ValueError("JWKS response too large")
        return body


# --- the policy ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Everything the policy reads. Replaced whole (one assignment), never mutated."""

    keys: Mapping[str, JwkKey] = field(default_factory=lambda: MappingProxyType({}))
    fetched_at: float | None = None  # clock time of the last good fetch
    attempted_at: float | None = None  # clock time of the last attempt, good or bad
    attempts: int = 0  # bumped by every attempt: lets waiters see "someone just fetched"
    last_ok: bool = False  # did the last attempt succeed?


class _Plan(NamedTuple):
    usable: bool  # we hold a key for this kid that may still serve
    fetch: bool  # a fetch is due and allowed now
    attempts: int  # the snapshot generation the plan was made from


class JwksCache:
    """Auth0 signing keys by ``kid``: fetched, parsed, refreshed and rate limited.

    ``clock`` is monotonic seconds (injected so tests can move time). ``max_stale_s`` is
    raised to ``ttl_s`` if smaller (a key is never unusable while still fresh). The caller
    that finds the keys due pays for the fetch (at most ``timeout_s``); everyone else who
    holds a usable key meanwhile is served from the cache without waiting.
    """

    def __init__(
        self,
        *,
        url: str,
        fetcher: JwksFetcher,
        clock: Callable[[], float] = time.monotonic,
        ttl_s: float = 600.0,
        min_refresh_s: float = 60.0,
        max_stale_s: float = 86400.0,
        max_keys: int = 64,
        timeout_s: float = 5.0,
    ) -> None:
        if ttl_s <= 0 or min_refresh_s < 0 or max_stale_s < 0 or max_keys < 1 or timeout_s <= 0:
            raise ConfigurationError(
                "JwksCache: ttl_s and timeout_s must be > 0, min_refresh_s and max_stale_s >= 0, "
                "max_keys >= 1"
            )
        self._url = url
        self._fetcher = fetcher
        self._clock = clock
        self._ttl = ttl_s
        self._min_refresh = min_refresh_s
        self._max_stale = max(max_stale_s, ttl_s)
        self._max_keys = max_keys
        self._timeout = timeout_s
        self._snap = _Snapshot()
        self._lock = threading.Lock()
        self._inflight: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        #: Fetches that failed (the metrics'; ``fetches`` counts all of them).
        self.fetch_failures = 0

    @property
    def fetches(self) -> int:
        """JWKS fetches attempted, successful or not."""
        return self._snap.attempts

    # The two pure steps. Everything the cache decides is here.

    def _plan(self, kid: str, now: float) -> _Plan:
        snap = self._snap
        age = None if snap.fetched_at is None else now - snap.fetched_at
        usable = kid in snap.keys and age is not None and age <= self._max_stale
        due = not usable or age is None or age > self._ttl
        allowed = snap.attempted_at is None or now - snap.attempted_at >= self._min_refresh
        return _Plan(usable=usable, fetch=due and allowed, attempts=snap.attempts)

    def _settle(self, kid: str, alg: str, now: float) -> JwkKey:
        snap = self._snap
        if snap.fetched_at is None or now - snap.fetched_at > self._max_stale:
            raise DependencyUnavailableError(
                "the identity provider's signing keys are unavailable",
                reason=Reason.AUTH_UNAVAILABLE,
            )
        key = snap.keys.get(kid)
        if key is None:
            if snap.last_ok:
                raise CredentialError(
                    "token signed with a key the identity provider does not publish",
                    reason=Reason.INVALID_TOKEN,
                )
            # We could not ask the tenant, so we cannot say the kid is bogus (it may be a
            # rotated-in key): fail closed as "unavailable", not as "your token is bad".
            raise DependencyUnavailableError(
                "the identity provider's signing keys could not be refreshed",
                reason=Reason.AUTH_UNAVAILABLE,
            )
        if not key.fits(alg):
            raise CredentialError(
                "token algorithm does not match its signing key", reason=Reason.INVALID_TOKEN
            )
        return key

    def _refresh_blocking(self, seen_attempts: int) -> None:
        """One fetch attempt, unless another caller attempted since ``seen_attempts``.

        Runs under the lock, so threads (and the async path's worker) share one fetch.
        Never raises: a failure is recorded, logged and leaves the keys as they were.
        """
        with self._lock:
            self._refresh_locked(seen_attempts)

    def _refresh_locked(self, seen_attempts: int) -> None:
        snap = self._snap
        if snap.attempts != seen_attempts:
            return
        started = self._clock()
        try:
            body = self._fetcher.fetch(self._url, timeout_s=self._timeout)
            keys = parse_jwks(body, max_keys=self._max_keys)
        except Exception as exc:
            # The URL and the error (status line, socket error, JSON position) carry no
            # secrets; the document itself is never logged.
            logger.warning(
                "JWKS fetch from %s failed (%s: %.200s); keeping %d cached key(s)",
                self._url,
                type(exc).__name__,
                exc,
                len(snap.keys),
            )
            self._snap = _Snapshot(snap.keys, snap.fetched_at, started, snap.attempts + 1, False)
            self.fetch_failures += 1
            return
        added = keys.keys() - snap.keys.keys()
        if added and snap.keys:
            logger.info("JWKS rotated: %d new key(s)", len(added))
        self._snap = _Snapshot(keys, started, started, snap.attempts + 1, True)

    # The two drivers: same plan, same settle, different ways to wait for the fetch.

    def get_key(self, kid: str, alg: str) -> JwkKey:
        """The key for ``kid`` usable with ``alg``; may block on one JWKS fetch."""
        now = self._clock()
        plan = self._plan(kid, now)
        if plan.fetch:
            if not plan.usable:
                self._refresh_blocking(plan.attempts)
            elif self._lock.acquire(blocking=False):
                # Stale but usable: refresh if nobody else is; never queue behind a fetch.
                try:
                    self._refresh_locked(plan.attempts)
                finally:
                    self._lock.release()
            now = self._clock()
        return self._settle(kid, alg, now)

    async def aget_key(self, kid: str, alg: str) -> JwkKey:
        """As :meth:`get_key`; the fetch runs in a worker thread and concurrent misses share it."""
        now = self._clock()
        plan = self._plan(kid, now)
        if plan.fetch:
            loop = asyncio.get_running_loop()
            inflight = self._inflight
            if inflight is not None and inflight[0] is loop and not inflight[1].done():
                if not plan.usable:
                    await asyncio.shield(inflight[1])
            elif not (plan.usable and self._lock.locked()):
                # As in get_key: a stale-key holder never queues behind another's fetch.
                task = loop.create_task(asyncio.to_thread(self._refresh_blocking, plan.attempts))
                self._inflight = (loop, task)
                await asyncio.shield(task)
            now = self._clock()
        return self._settle(kid, alg, now)

    @property
    def kids(self) -> frozenset[str]:
        """The ``kid`` values currently held (for diagnostics and health checks)."""
        return frozenset(self._snap.keys)
