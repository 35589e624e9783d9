"""Rate limits as values: a limit (:class:`RateLimitSpec`), one hit's outcome, its headers.

A limit is a :class:`RateLimitSpec` (``"5/minute"``); the limiter that counts hits in a
storage (:class:`illumichat_authz.stores.ratelimit.RateLimiter`, on the ``limits``
library) answers a :class:`RateLimitOutcome`. :func:`rate_limit_headers` renders it as
``Retry-After`` (on a deny) and the IETF ``RateLimit`` / ``RateLimit-Policy`` fields of
draft-ietf-httpapi-ratelimit-headers-11::

    RateLimit-Policy: "default";q=5;w=60
    RateLimit: "default";r=0;t=42

Pure: nothing here imports ``limits`` or touches a storage, so the core can hold specs
and render outcomes without the limiter in its import closure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final, Literal

from illumichat_authz.errors import ConfigurationError

__all__ = [
    "STORAGE_SCHEMES",
    "RateLimitOutcome",
    "RateLimitSpec",
    "RateLimitUnit",
    "WhenUnavailable",
    "check_storage_uri",
    "rate_limit_headers",
]

RateLimitUnit = Literal["second", "minute", "hour", "day"]
#: What a route does while its limit cannot be counted (the storage is down): refuse with
#: 503 (the default), or pass uncounted (logged, and said in the decision's explanation).
WhenUnavailable = Literal["refuse", "pass"]

_SPEC = re.compile(
    r"^\s*(?P<amount>[0-9]{1,9})\s*(?:/|\s+per\s+)\s*(?P<unit>second|minute|hour|day)s?\s*$",
    re.IGNORECASE,
)
#: Each unit as written (lower case), and the seconds in one window of it.
_UNITS: Final[dict[str, tuple[RateLimitUnit, int]]] = {
    "second": ("second", 1),
    "minute": ("minute", 60),
    "hour": ("hour", 3600),
    "day": ("day", 86400),
}
#: sf-string characters allowed in a policy name (RFC 9651 §3.3.3, minus the escapes).
_POLICY_NAME = re.compile(r"^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}$")


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    """``amount`` hits per ``window_s`` seconds (one ``unit``); build with :meth:`parse`."""

    amount: int
    window_s: int
    unit: RateLimitUnit
    when_unavailable: WhenUnavailable = "refuse"

    @classmethod
    def parse(cls, text: str, *, when_unavailable: WhenUnavailable = "refuse") -> RateLimitSpec:
        """``"5/minute"``, ``"5 per minute"``, ``"10/second"``, ``"100/hour"``, ``"1000/day"``."""
        match = _SPEC.match(text) if isinstance(text, str) else None
        if match is None or int(match["amount"]) < 1:
            raise ConfigurationError(
                f"rate limit {text!r} is not '<positive count>/<second|minute|hour|day>'"
            )
        if when_unavailable not in ("refuse", "pass"):
            raise ConfigurationError(
                f"rate_limit_unavailable must be 'refuse' or 'pass', not {when_unavailable!r}"
            )
        unit, window_s = _UNITS[match["unit"].lower()]
        return cls(
            amount=int(match["amount"]),
            window_s=window_s,
            unit=unit,
            when_unavailable=when_unavailable,
        )

    def __str__(self) -> str:
        return f"{self.amount}/{self.unit}"


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


#: Storage URI schemes supported here: one process's memory, or Redis, alone, behind
#: Sentinel or as a Cluster (whose connects and commands get bounded timeouts). ``limits``
#: knows more (MongoDB, memcached) that we do not test or bound.
STORAGE_SCHEMES: Final = (
    "memory",
    "redis",
    "rediss",
    "redis+unix",
    "redis+sentinel",
    "redis+cluster",
)


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
