"""The one way the core asks for a fact: the typed :class:`Lookups` protocol.

A synchronous host passes an object whose attributes are its stores' own bound methods:
the core calls them directly, and a lookup costs what the store costs. A host that must
wait for an answer (async stores, a body still on the wire) cannot answer inline; its
lookups raise :class:`Need` instead, and the driver answers the query, remembers the
answer in a :class:`Replay` and runs the same plain function again. ``Need`` is a
``BaseException`` so that nothing that catches ``Exception`` can swallow it; each
entry point lets it through its one ``try`` (and notes the principal verified so far on
it, so that a replay never verifies a credential twice).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

from ..errors import AuthzError, BadRequestError, DependencyUnavailableError
from ..reasons import Reason

if TYPE_CHECKING:
    from ..credentials.apikeys import ApiKeyRecord
    from ..credentials.jwk import JwkKey
    from ..credentials.sessions import SessionRecord
    from ..facts import Membership, Resource
    from ..principal import Principal
    from ..ratelimit import RateLimitOutcome, RateLimitSpec
    from .authn import CredentialSource

__all__ = [
    "FACT_LOOKUPS",
    "LOOKUPS",
    "Lookups",
    "Need",
    "Query",
    "Replay",
    "propagates",
    "unavailable",
]


class Lookups(Protocol):
    """Everything a decision may need from outside the core, one method per question."""

    # Facts (facts.Facts): the rules' inputs.
    def membership(self, user: str, workspace: str) -> Membership | None: ...
    def resource(self, kind: str, id: str) -> Resource | None: ...
    def has_grant(self, user: str, kind: str, id: str) -> bool: ...

    # Credentials.
    def api_key(self, key_id: str) -> ApiKeyRecord | None: ...
    def record_api_key_use(self, key_id: str) -> None: ...
    def jwk(self, kid: str, alg: str) -> JwkKey: ...
    def session(self, token: str) -> SessionRecord | None: ...

    #: The credential cache (held by the driver): what this very credential verified as.
    def cached_principal(
        self, source: CredentialSource, credential: str, now: float
    ) -> Principal | None: ...
    def cache_principal(
        self,
        source: CredentialSource,
        credential: str,
        principal: Principal,
        now: float,
        revocable: bool,
    ) -> None: ...

    # The request and its neighbours.
    def body(self, max_bytes: int) -> bytes | None:
        """At most ``max_bytes`` of the body; ``None`` when it is larger."""
        ...

    def rate_limit_hit(self, key: str, spec: RateLimitSpec) -> RateLimitOutcome:
        """Count one hit of ``key`` against ``spec``."""
        ...


#: Every lookup, by name: a query names one of these.
LOOKUPS: tuple[str, ...] = (
    "membership",
    "resource",
    "has_grant",
    "api_key",
    "record_api_key_use",
    "jwk",
    "session",
    "cached_principal",
    "cache_principal",
    "body",
    "rate_limit_hit",
)
#: The facts lookups (a failure is ``facts_unavailable``; the others ``auth_unavailable``).
FACT_LOOKUPS = frozenset({"membership", "resource", "has_grant"})


class Query(NamedTuple):
    """One lookup and its arguments: ``Query("membership", ("u1", "w1"))``."""

    lookup: str
    args: tuple[Any, ...]


class Need(BaseException):
    """Raised by a lookup that cannot answer now; the driver answers and runs again."""

    def __init__(self, query: Query) -> None:
        self.query = query
        #: The principal the entry point had verified (or was given) when it was raised.
        self.principal: Principal | None = None


class _Raised(NamedTuple):
    """A lookup's failure, remembered: every replay sees it raised again."""

    exc: BaseException


_RESERVED = (KeyboardInterrupt, SystemExit, GeneratorExit, Need)


def propagates(exc: BaseException) -> bool:
    """Whether ``exc`` must pass through a decision untouched (never become a deny)."""
    if isinstance(exc, Exception):
        return False
    if isinstance(exc, _RESERVED):
        return True
    # Task cancellation. The core never imports asyncio: if it is not loaded, no task
    # exists to be cancelled.
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)


def unavailable(lookup: str, exc: BaseException) -> BaseException:
    """What ``exc``, raised by the lookup ``lookup``, means; raised in its place.

    Our own errors keep their status; a body that could not be read is the client's
    broken request (400); anything else is a dependency that is down (503). Not logged
    here: the entry point's ``failure`` logs each deny once.
    """
    if isinstance(exc, AuthzError) or propagates(exc):
        return exc
    error: AuthzError
    if lookup == "body":
        # Almost always the client hanging up mid-body: its request is incomplete.
        error = BadRequestError(
            "the request body could not be read", reason=Reason.MALFORMED_REQUEST
        )
    else:
        reason = Reason.FACTS_UNAVAILABLE if lookup in FACT_LOOKUPS else Reason.AUTH_UNAVAILABLE
        which = lookup.replace("_", " ")
        error = DependencyUnavailableError(
            f"{which} lookup is unavailable; retry later", reason=reason
        )
    error.__cause__ = exc
    return error


class Replay:
    """Lookups answered so far for one decision; a missing one raises :class:`Need`.

    ``inline`` answers some lookups at once (a synchronous store, an in-memory rate
    limit): they are asked at most once per decision as well, and their failures are
    remembered like any answer. Side effects (a rate-limit hit, a key-use record, reading
    the body) therefore happen once however often the rules run.
    """

    __slots__ = ("answers", "inline")

    def __init__(self, inline: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self.answers: dict[Query, Any] = {}
        self.inline: Mapping[str, Callable[..., Any]] = inline or {}

    def answer(self, query: Query, value: Any) -> None:
        self.answers[query] = value

    def fail(self, query: Query, exc: BaseException) -> None:
        self.answers[query] = _Raised(exc)

    def _ask(self, lookup: str, args: tuple[Any, ...]) -> Any:
        query = Query(lookup, args)
        try:
            value = self.answers[query]
        except KeyError:
            now = self.inline.get(lookup)
            if now is None:
                raise Need(query) from None
            try:
                value = now(*args)
            except BaseException as exc:
                if propagates(exc):
                    raise
                value = _Raised(exc)
            self.answers[query] = value
        if type(value) is _Raised:
            raise value.exc
        return value

    def membership(self, user: str, workspace: str) -> Membership | None:
        return cast("Membership | None", self._ask("membership", (user, workspace)))

    def resource(self, kind: str, id: str) -> Resource | None:
        return cast("Resource | None", self._ask("resource", (kind, id)))

    def has_grant(self, user: str, kind: str, id: str) -> bool:
        return bool(self._ask("has_grant", (user, kind, id)))

    def api_key(self, key_id: str) -> ApiKeyRecord | None:
        return cast("ApiKeyRecord | None", self._ask("api_key", (key_id,)))

    def record_api_key_use(self, key_id: str) -> None:
        self._ask("record_api_key_use", (key_id,))

    def jwk(self, kid: str, alg: str) -> JwkKey:
        return cast("JwkKey", self._ask("jwk", (kid, alg)))

    def session(self, token: str) -> SessionRecord | None:
        return cast("SessionRecord | None", self._ask("session", (token,)))

    def cached_principal(
        self, source: CredentialSource, credential: str, now: float
    ) -> Principal | None:
        return cast("Principal | None", self._ask("cached_principal", (source, credential, now)))

    def cache_principal(
        self,
        source: CredentialSource,
        credential: str,
        principal: Principal,
        now: float,
        revocable: bool,
    ) -> None:
        self._ask("cache_principal", (source, credential, principal, now, revocable))

    def body(self, max_bytes: int) -> bytes | None:
        return cast("bytes | None", self._ask("body", (max_bytes,)))

    def rate_limit_hit(self, key: str, spec: RateLimitSpec) -> RateLimitOutcome:
        return cast("RateLimitOutcome", self._ask("rate_limit_hit", (key, spec)))
