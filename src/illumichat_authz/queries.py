"""What the decision core may ask its driver for: the only I/O a decision can need.

The core (``core.decide``) is a generator that yields these and receives the answers;
``Authorizer`` answers them synchronously or asynchronously. A query the driver cannot
answer raises into the generator, which turns it into a deny (503 where a dependency
is down), never an allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ratelimit import RateLimitSpec

__all__ = [
    "NeedApiKey",
    "NeedAssistant",
    "NeedBody",
    "NeedChat",
    "NeedGrant",
    "NeedJwk",
    "NeedMembership",
    "NeedRateLimit",
    "NeedSession",
    "Query",
]


@dataclass(frozen=True, slots=True)
class NeedBody:
    """The request body, at most ``max_bytes`` (answered with ``None`` when larger)."""

    max_bytes: int


@dataclass(frozen=True, slots=True)
class NeedMembership:
    user: str
    workspace: str


@dataclass(frozen=True, slots=True)
class NeedAssistant:
    assistant_id: str


@dataclass(frozen=True, slots=True)
class NeedChat:
    chat_id: str


@dataclass(frozen=True, slots=True)
class NeedGrant:
    user: str
    assistant_id: str


@dataclass(frozen=True, slots=True)
class NeedApiKey:
    key_id: str


@dataclass(frozen=True, slots=True)
class NeedJwk:
    kid: str
    alg: str


@dataclass(frozen=True, slots=True)
class NeedSession:
    """Auth.js database strategy: the session row for an opaque session token."""

    session_token: str


@dataclass(frozen=True, slots=True)
class NeedRateLimit:
    """Count one hit of ``key`` against ``spec``; answered with a ``RateLimitOutcome``."""

    key: str
    spec: RateLimitSpec


Query = (
    NeedBody
    | NeedMembership
    | NeedAssistant
    | NeedChat
    | NeedGrant
    | NeedApiKey
    | NeedJwk
    | NeedSession
    | NeedRateLimit
)
