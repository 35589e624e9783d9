"""What the decision core may ask its driver for: the only I/O a decision can need.

The core (``core.decide``) is a generator that yields these and receives the answers;
``Authorizer`` answers them synchronously or asynchronously. A query the driver cannot
answer raises into the generator, which turns it into a deny (503 where a dependency
is down), never an allow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .facts import Assistant, Chat, Membership
    from .ratelimit import RateLimitSpec

__all__ = [
    "FactsByQuery",
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
    "RecordApiKeyUse",
]


class NeedBody(NamedTuple):
    """The request body, at most ``max_bytes`` (answered with ``None`` when larger)."""

    max_bytes: int


class NeedMembership(NamedTuple):
    user: str
    workspace: str


class NeedAssistant(NamedTuple):
    assistant_id: str


class NeedChat(NamedTuple):
    chat_id: str


class NeedGrant(NamedTuple):
    user: str
    assistant_id: str


class NeedApiKey(NamedTuple):
    key_id: str


class RecordApiKeyUse(NamedTuple):
    """Not a question: the key verified, so record its last use (answered with ``None``).

    A store that cannot record it is logged and ignored: bookkeeping never changes a
    decision that is already made.
    """

    key_id: str


class NeedJwk(NamedTuple):
    kid: str
    alg: str


class NeedSession(NamedTuple):
    """Auth.js database strategy: the session row for an opaque session token."""

    session_token: str


class NeedRateLimit(NamedTuple):
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
    | RecordApiKeyUse
    | NeedJwk
    | NeedSession
    | NeedRateLimit
)


class FactsByQuery:
    """The ``Facts`` protocol over one method, ``ask(query)``: each lookup is its query.

    For stores that answer queries rather than method calls: the driver's guard around a
    host's store (``GuardedFacts``) and the rules' replay of answered facts (``Replay``).
    """

    __slots__ = ()

    def ask(self, query: NeedMembership | NeedAssistant | NeedChat | NeedGrant) -> Any:
        raise NotImplementedError

    def membership(self, user: str, workspace: str) -> Membership | None:
        return self.ask(NeedMembership(user, workspace))  # type: ignore[no-any-return]

    def assistant(self, assistant_id: str) -> Assistant | None:
        return self.ask(NeedAssistant(assistant_id))  # type: ignore[no-any-return]

    def chat(self, chat_id: str) -> Chat | None:
        return self.ask(NeedChat(chat_id))  # type: ignore[no-any-return]

    def has_grant(self, user: str, assistant_id: str) -> bool:
        return bool(self.ask(NeedGrant(user, assistant_id)))
