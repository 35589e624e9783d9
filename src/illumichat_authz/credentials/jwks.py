"""A JWKS cache for Auth0 signing keys that survives outages and refresh storms.

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
import base64
import ipaddress
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, Protocol
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from illumichat_authz.errors import ConfigurationError, CredentialError, DependencyUnavailableError
from illumichat_authz.reasons import Reason
from illumichat_authz.request import is_decimal

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "JwkKey",
    "JwksCache",
    "JwksFetcher",
    "UrllibJwksFetcher",
    "parse_jwks",
]

logger = logging.getLogger("illumichat_authz.credentials.jwks")

#: RFC 7518 §3.1 asymmetric JWS algorithms, with the key family (and curve) each needs.
SUPPORTED_ALGORITHMS: Mapping[str, tuple[Literal["RSA", "EC"], str | None]] = MappingProxyType(
    {
        "RS256": ("RSA", None),
        "RS384": ("RSA", None),
        "RS512": ("RSA", None),
        "PS256": ("RSA", None),
        "PS384": ("RSA", None),
        "PS512": ("RSA", None),
        "ES256": ("EC", "P-256"),
        "ES384": ("EC", "P-384"),
        "ES512": ("EC", "P-521"),
    }
)

_CURVES: Mapping[str, tuple[ec.EllipticCurve, int]] = MappingProxyType(
    {"P-256": (ec.SECP256R1(), 32), "P-384": (ec.SECP384R1(), 48), "P-521": (ec.SECP521R1(), 66)}
)
_MIN_RSA_BITS = 2048
_MAX_RSA_BITS = 8192
_MAX_KID_CHARS = 256
#: A JWKS larger than this is not a JWKS (Auth0's is ~2 KB); refuse before parsing JSON.
DEFAULT_MAX_JWKS_BYTES = 256 * 1024
_LOOPBACK_NAMES = {"localhost"}


@dataclass(frozen=True, slots=True, kw_only=True)
class JwkKey:
    """One parsed public signing key. ``alg`` is the JWK's own ``alg`` (``None`` if absent)."""

    kid: str
    kty: Literal["RSA", "EC"]
    alg: str | None
    crv: str | None
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = field(repr=False)

    def fits(self, alg: str) -> bool:
        """Whether this key may verify a JWS made with ``alg``.

        RFC 7517 §4.4: "The 'alg' member ... identifies the algorithm intended for use with
        the key"; and RFC 7518 §3.4 fixes the curve of each ES algorithm.
        """
        family = SUPPORTED_ALGORITHMS.get(alg)
        if family is None or family[0] != self.kty:
            return False
        if self.alg is not None and self.alg != alg:
            return False
        return family[1] is None or family[1] == self.crv


class JwksFetcher(Protocol):
    """Fetches the raw JWKS document. Raises (anything) on any failure."""

    def fetch(self, url: str, *, timeout_s: float) -> bytes: ...


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        loopback = _is_loopback(host)
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


# --- parsing -------------------------------------------------------------------------------


def _b64u_int(value: object) -> int:
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise ValueError("bad base64url integer")
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    return int.from_bytes(raw, "big")


def _parse_jwk(jwk: Mapping[str, Any]) -> JwkKey:
    """One JWK to a key, or ``ValueError`` saying why it is not a usable signing key."""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= _MAX_KID_CHARS:
        raise ValueError("missing or oversized kid")
    # RFC 7517 §4.2: "'sig' (signature)"; a key published for encryption is not ours to use.
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"use {use!r} is not 'sig'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise ValueError("key_ops does not include 'verify'")
    if "d" in jwk:
        raise ValueError("private key material published in the JWKS")
    alg = jwk.get("alg")
    if alg is not None and alg not in SUPPORTED_ALGORITHMS:
        raise ValueError("unsupported alg")
    kty = jwk.get("kty")
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    if kty == "RSA":
        n, e = _b64u_int(jwk.get("n")), _b64u_int(jwk.get("e"))
        if not _MIN_RSA_BITS <= n.bit_length() <= _MAX_RSA_BITS or e < 3 or e % 2 == 0:
            raise ValueError("RSA key size or exponent out of range")
        public_key = rsa.RSAPublicNumbers(e, n).public_key()
        crv = None
    elif kty == "EC":
        crv = jwk.get("crv")
        if not isinstance(crv, str) or crv not in _CURVES:
            raise ValueError("unsupported curve")
        curve, _ = _CURVES[crv]
        # cryptography checks that the point lies on the curve.
        numbers = ec.EllipticCurvePublicNumbers(
            _b64u_int(jwk.get("x")), _b64u_int(jwk.get("y")), curve
        )
        public_key = numbers.public_key()
    else:
        raise ValueError("unsupported kty")
    key = JwkKey(kid=kid, kty=kty, alg=alg, crv=crv, public_key=public_key)
    if alg is not None and not key.fits(alg):
        raise ValueError("alg does not fit the key type")
    return key


def parse_jwks(body: bytes, *, max_keys: int = 64) -> Mapping[str, JwkKey]:
    """Parse a JWKS document into ``kid -> key``; ``ValueError`` if nothing usable is in it.

    Unusable entries are skipped (logged), so one odd key never hides the others. A ``kid``
    published twice is ambiguous: both copies are dropped.
    """
    if len(body) > DEFAULT_MAX_JWKS_BYTES:
        raise ValueError("JWKS document too large")
    try:
        document = json.loads(body)
    except RecursionError:
        # The parser has one error type (the cache catches more, other callers may not).
        raise ValueError("JWKS is nested too deeply") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("JWKS is not an object with a 'keys' array")
    keys: dict[str, JwkKey] = {}
    duplicated: set[str] = set()
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict):
            logger.warning("JWKS entry %d skipped: not an object", index)
            continue
        try:
            key = _parse_jwk(jwk)
        except (ValueError, TypeError, OverflowError) as exc:
            logger.info("JWKS entry %d skipped: %s", index, exc)
            continue
        if key.kid in keys or key.kid in duplicated:
            duplicated.add(key.kid)
            keys.pop(key.kid, None)
            continue
        if len(keys) >= max_keys:
            logger.warning("JWKS has more than %d usable keys; the rest are ignored", max_keys)
            break
        keys[key.kid] = key
    if duplicated:
        logger.warning("JWKS publishes %d kid(s) more than once; they are ignored", len(duplicated))
    if not keys:
        raise ValueError("JWKS holds no usable signing key")
    return MappingProxyType(keys)


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
