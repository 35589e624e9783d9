"""The driver: runs the sans-IO core and answers its queries, for sync and async hosts.

One ``Authorizer`` per process: it holds the compiled core and the stores (facts, API
keys, JWKS, database sessions, rate-limit counters). ``decide`` serves WSGI and other
sync callers; ``adecide`` serves ASGI, awaiting async facts and never blocking the event
loop on a network fetch. Both run the same core (``core.request_decision``), so the rules
exist once. A store that fails makes the decision a 503, never an allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from .authn import Authenticators
from .config import Settings, load_settings
from .core import Core, Flow, access_decision, decide_access, identify, request_decision
from .credentials.apikeys import ApiKeyStore
from .credentials.auth0 import Auth0BearerVerifier
from .credentials.authjs import AuthjsSessionDecoder
from .credentials.sessions import SessionStore
from .credentials.twilio import TwilioSignatureVerifier
from .decision import Decision
from .errors import AuthzError, BadRequestError, ConfigurationError, DependencyUnavailableError
from .facts import (
    AsyncFacts,
    Facts,
    InMemoryFacts,
    load_facts_file,
)
from .net import parse_trusted
from .policy import Policy
from .policy_check import require_consistent
from .principal import Principal
from .queries import (
    FactsByQuery,
    NeedApiKey,
    NeedAssistant,
    NeedBody,
    NeedChat,
    NeedGrant,
    NeedJwk,
    NeedMembership,
    NeedRateLimit,
    NeedSession,
    Query,
    RecordApiKeyUse,
)
from .ratelimit import RateLimitSpec
from .reasons import Reason
from .request import RequestFacts
from .routes import RouteTable, load_routes
from .stores.api_keys import SqliteApiKeyStore
from .stores.credential_cache import CredentialCache
from .stores.jwks import JwksCache, UrllibJwksFetcher
from .stores.ratelimit import RateLimiter
from .stores.sessions import SqliteSessionStore

__all__ = ["AsyncBodyReader", "Authorizer", "BodyReader", "GuardedFacts", "build_core"]

_log = logging.getLogger("illumichat_authz")

#: Reads at most ``max_bytes`` of the body; ``None`` when the body is larger.
BodyReader = Callable[[int], bytes | None]
AsyncBodyReader = Callable[[int], Awaitable[bytes | None]]


def build_core(
    settings: Settings, *, routes: RouteTable | None = None, policy: Policy | None = None
) -> Core:
    """Compile the routes, the policy and the credential verifiers; fail fast on mistakes."""
    pol = settings.policies
    with _setting(
        "policies.dir / policies.routes" + (" / policies.host_routes" if pol.host_routes else "")
    ):
        routes = routes or load_routes(pol.dir / pol.routes, host_files=pol.host_routes)
    with _setting("policies.dir / policies.model / policies.policy"):
        policy = policy or Policy(model_path=pol.dir / pol.model, policy_path=pol.dir / pol.policy)
    require_consistent(policy, routes)
    specs: dict[str, RateLimitSpec] = {}
    for route in routes.routes:
        if route.rate_limit:
            specs[route.id] = RateLimitSpec.parse(route.rate_limit)
    twilio_cfg = settings.twilio
    twilio = (
        TwilioSignatureVerifier.from_settings(twilio_cfg)
        if twilio_cfg.auth_tokens or twilio_cfg.assistants
        else None
    )
    session_cfg = settings.session
    authenticators = Authenticators(
        session=AuthjsSessionDecoder.from_settings(session_cfg)
        if session_cfg.secrets or session_cfg.database
        else None,
        session_database=session_cfg.database is not None,
        auth0=Auth0BearerVerifier.from_settings(settings.auth0) if settings.auth0.domain else None,
        api_keys=settings.api_keys.database is not None,
        cache=CredentialCache(revocable_ttl_s=settings.api_keys.cache_ttl_s),
    )
    return Core(
        routes=routes,
        policy=policy,
        authenticators=authenticators,
        twilio=twilio,
        trusted_proxies=parse_trusted(settings.proxies.trusted),
        forwarded_prefix=settings.proxies.forwarded_prefix,
        public_base_url=twilio_cfg.public_base_url,
        undeclared=settings.routes.undeclared,
        allow_preflight=settings.routes.allow_preflight,
        conceal_hidden=settings.decisions.conceal_hidden,
        max_path_length=settings.routes.max_path_length,
        check_app=settings.routes.check_app,
        max_body_bytes=twilio_cfg.max_body_bytes,
        rate_limits=specs,
    )


@contextlib.contextmanager
def _setting(key: str) -> Iterator[None]:
    """Name the setting behind a file that cannot be loaded (``facts.file: ...``)."""
    try:
        yield
    except ConfigurationError as exc:
        raise ConfigurationError(f"{key}: {exc}") from None


def _dependency_error(query: Query, exc: BaseException) -> AuthzError:
    if isinstance(exc, AuthzError):
        return exc
    if isinstance(query, NeedBody):
        # Almost always the client hanging up mid-body: its request is incomplete, which
        # is a 400 (if anyone is left to hear it), not an outage of ours.
        _log.info("request body could not be read: %s", type(exc).__name__)
        return BadRequestError(
            "the request body could not be read", reason=Reason.MALFORMED_REQUEST
        )
    which = type(query).__name__.removeprefix("Need").lower()
    _log.warning("%s lookup failed: %s", which, type(exc).__name__)
    reason = (
        Reason.FACTS_UNAVAILABLE
        if isinstance(query, NeedMembership | NeedAssistant | NeedChat | NeedGrant)
        else Reason.AUTH_UNAVAILABLE
    )
    return DependencyUnavailableError(f"{which} lookup is unavailable; retry later", reason=reason)


class Authorizer:
    """Decides requests: ``decide`` for sync hosts, ``adecide`` for async ones."""

    def __init__(
        self,
        *,
        core: Core,
        facts: Facts | AsyncFacts | None = None,
        api_keys: ApiKeyStore | None = None,
        jwks: JwksCache | None = None,
        sessions: SessionStore | None = None,
        rate_limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core = core
        self._facts: Facts | AsyncFacts = facts if facts is not None else InMemoryFacts()
        self.api_keys = api_keys
        self.jwks = jwks
        self.sessions = sessions
        # Built on first use: a limits memory storage starts a thread.
        self._rate_limiter = rate_limiter
        self.clock = clock
        self._sync_answers = self._build_answers()

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        config_file: str | None = None,
        facts: Facts | AsyncFacts | None = None,
        **stores: Any,
    ) -> Authorizer:
        """Build everything the settings describe (stores may be passed in instead)."""
        settings = settings or load_settings(config_file)
        core = build_core(settings)
        if facts is None and settings.facts.file is not None:
            with _setting("facts.file"):
                facts = load_facts_file(settings.facts.file)
        if "api_keys" not in stores and settings.api_keys.database is not None:
            stores["api_keys"] = SqliteApiKeyStore(settings.api_keys.database)
        if "sessions" not in stores and settings.session.database is not None:
            stores["sessions"] = SqliteSessionStore(settings.session.database)
        url = settings.auth0.resolved_jwks_url
        if "jwks" not in stores and url is not None:
            stores["jwks"] = JwksCache(
                url=url,
                fetcher=UrllibJwksFetcher(),
                ttl_s=settings.auth0.jwks_ttl_s,
                min_refresh_s=settings.auth0.jwks_min_refresh_s,
                max_stale_s=settings.auth0.jwks_max_stale_s,
            )
        if "rate_limiter" not in stores:
            stores["rate_limiter"] = RateLimiter(storage_uri=settings.rate_limits.storage)
        return cls(core=core, facts=facts, **stores)

    # --- sync -----------------------------------------------------------------------
    def decide(
        self,
        request: RequestFacts,
        *,
        principal: Principal | None = None,
        read_body: BodyReader | None = None,
    ) -> Decision:
        decided = request_decision(
            request, self.core, now=self.clock(), principal=principal, facts=self._inline_facts
        )
        if isinstance(decided, Decision):
            return decided
        answers = self._sync_answers
        if read_body is not None:
            answers = {**answers, NeedBody: lambda query: read_body(query.max_bytes)}
        return _drive(decided, answers)

    def decide_access(
        self,
        *,
        principal: Principal,
        action: str,
        resource_kind: str | None = None,
        resource_id: str | None = None,
        workspace: str | None = None,
    ) -> Decision:
        """Decide ``action`` on a resource without an HTTP request (see ``core.decide_access``)."""
        decided = access_decision(
            self.core,
            principal=principal,
            action=action,
            resource_kind=resource_kind,
            resource_id=resource_id,
            workspace=workspace,
            facts=self._inline_facts,
        )
        if isinstance(decided, Decision):
            return decided
        return _drive(decided, self._sync_answers)

    def identify(self, request: RequestFacts) -> Decision:
        """Only who is calling (see ``core.identify``): 200 with the principal, or the deny."""
        return _drive(identify(request, self.core, now=self.clock()), self._sync_answers)

    async def aidentify(self, request: RequestFacts) -> Decision:
        """The async twin of :meth:`identify`."""
        flow = identify(request, self.core, now=self.clock())
        step = _first_step(flow)
        if isinstance(step, Decision):
            return step
        return await self._arun(flow, None, step)

    async def adecide_access(
        self,
        *,
        principal: Principal,
        action: str,
        resource_kind: str | None = None,
        resource_id: str | None = None,
        workspace: str | None = None,
    ) -> Decision:
        """The async twin of :meth:`decide_access`."""
        flow = decide_access(
            self.core,
            principal=principal,
            action=action,
            resource_kind=resource_kind,
            resource_id=resource_id,
            workspace=workspace,
            facts=self._inline_facts,
        )
        step = _first_step(flow)
        if isinstance(step, Decision):
            return step
        return await self._arun(flow, None, step)

    @property
    def facts(self) -> Facts | AsyncFacts:
        return self._facts

    @facts.setter
    def facts(self, facts: Facts | AsyncFacts) -> None:
        # The answer table closes over the facts: rebuild it so a swap takes effect.
        self._facts = facts
        self._sync_answers = self._build_answers()

    def _build_answers(self) -> dict[type, Callable[[Any], Any]]:
        """One answering function per query type (a dict lookup, not an isinstance chain)."""
        facts: Any = self._facts
        self._facts_async = inspect.iscoroutinefunction(getattr(facts, "membership", None))
        # Bound methods fetched once; each query is a tuple of exactly the method's arguments.
        membership, assistant = facts.membership, facts.assistant
        chat, has_grant = facts.chat, facts.has_grant
        answers: dict[type, Callable[[Any], Any]] = {
            NeedBody: _no_body_reader,
            NeedMembership: lambda q: membership(*q),
            NeedAssistant: lambda q: assistant(*q),
            NeedChat: lambda q: chat(*q),
            NeedGrant: lambda q: has_grant(*q),
            NeedApiKey: lambda q: self._api_keys().get(q.key_id),
            RecordApiKeyUse: self._record_api_key_use,
            NeedJwk: lambda q: self._jwks().get_key(q.kid, q.alg),
            NeedSession: lambda q: self._sessions().get_session(q.session_token),
            NeedRateLimit: lambda q: self._limiter().hit(q.key, q.spec),
        }
        # Synchronous facts are called by the core itself (no generator round trip per
        # lookup); async ones are awaited by adecide and refused by decide.
        # InMemoryFacts cannot fail (dict lookups); any other store is guarded so that
        # its failures are 503s, as they are when answered through the driver.
        self._inline_facts: Facts | None = (
            None
            if self._facts_async
            else facts
            if type(facts) is InMemoryFacts
            else GuardedFacts(facts)
        )
        if self._facts_async:
            for kind in _FACT_QUERIES:
                answers[kind] = _needs_adecide
        return answers

    # --- async ----------------------------------------------------------------------
    async def adecide(
        self,
        request: RequestFacts,
        *,
        principal: Principal | None = None,
        read_body: AsyncBodyReader | None = None,
    ) -> Decision:
        decided = self.start(request, principal=principal)
        if isinstance(decided, Decision):
            return decided
        return await self.afinish(decided, read_body=read_body)

    def start(
        self, request: RequestFacts, *, principal: Principal | None = None
    ) -> Decision | Flow:
        """The :class:`Decision` when the core needs nothing asked (a cached credential and
        synchronous facts: most requests), else the flow to finish with :meth:`afinish`.

        ``adecide`` is exactly ``start`` then ``afinish``; an adapter calling the two
        itself saves a coroutine on every request that needs no await.
        """
        return request_decision(
            request, self.core, now=self.clock(), principal=principal, facts=self._inline_facts
        )

    async def afinish(self, flow: Flow, *, read_body: AsyncBodyReader | None = None) -> Decision:
        """Answer ``flow``'s queries (awaiting I/O) until it decides."""
        step = _first_step(flow)
        if isinstance(step, Decision):
            return step
        return await self._arun(flow, read_body, step)

    async def _arun(self, flow: Flow, read_body: AsyncBodyReader | None, query: Query) -> Decision:
        # The async twin of _drive, from the first query on: each one is awaited.
        try:
            while True:
                try:
                    answer = await self._aanswer(query, read_body)
                except Exception as exc:
                    query = flow.throw(_dependency_error(query, exc))
                else:
                    query = flow.send(answer)
        except StopIteration as done:
            result: Decision = done.value
            return result

    async def _aanswer(self, query: Query, read_body: AsyncBodyReader | None) -> Any:
        if isinstance(query, NeedMembership | NeedAssistant | NeedChat | NeedGrant):
            answer = ask_facts(self.facts, query)  # type: ignore[arg-type]
            return await answer if self._facts_async else answer
        if isinstance(query, NeedApiKey):
            # SQLite is a blocking call: keep it off the event loop.
            return await asyncio.to_thread(self._api_keys().get, query.key_id)
        if isinstance(query, RecordApiKeyUse):
            # A throttled write at most: off the event loop like the lookup.
            return await asyncio.to_thread(self._record_api_key_use, query)
        if isinstance(query, NeedJwk):
            return await self._jwks().aget_key(query.kid, query.alg)
        if isinstance(query, NeedSession):
            return await asyncio.to_thread(self._sessions().get_session, query.session_token)
        if isinstance(query, NeedRateLimit):
            return await self._limiter().ahit(query.key, query.spec)
        if isinstance(query, NeedBody):
            if read_body is None:
                raise RuntimeError("the adapter supplied no way to read the body")
            return await read_body(query.max_bytes)
        raise TypeError(f"unknown query {query!r}")

    def _record_api_key_use(self, query: RecordApiKeyUse) -> None:
        """Last-used time (throttled by the store); a failure never changes the decision."""
        try:
            self._api_keys().touch(query.key_id, now=self.clock())
        except Exception as exc:
            _log.warning(
                "API key %s: could not record last use: %s", query.key_id, type(exc).__name__
            )

    def revoke_api_key(self, key_id: str) -> bool:
        """Revoke in the store and drop the key from the credential cache, at once."""
        revoked = self._api_keys().revoke(key_id, now=self.clock())
        cache = self.core.authenticators.cache
        if cache is not None:
            cache.forget(key_id)
        return revoked

    # --- stores that must be configured before their credentials can verify --------
    def _api_keys(self) -> ApiKeyStore:
        if self.api_keys is None:
            raise DependencyUnavailableError("no API key store is configured")
        return self.api_keys

    def _jwks(self) -> JwksCache:
        if self.jwks is None:
            raise DependencyUnavailableError("no Auth0 JWKS is configured")
        return self.jwks

    def _limiter(self) -> RateLimiter:
        if self._rate_limiter is None:
            self._rate_limiter = RateLimiter()
        return self._rate_limiter

    @property
    def rate_limiter(self) -> RateLimiter:
        return self._limiter()

    def _sessions(self) -> SessionStore:
        if self.sessions is None:
            raise DependencyUnavailableError("no session store is configured")
        return self.sessions


_FACT_QUERIES = frozenset({NeedMembership, NeedAssistant, NeedChat, NeedGrant})


class GuardedFacts(FactsByQuery):
    """A synchronous facts store whose failures are 503 ``facts_unavailable``: the same
    answer a failed lookup gets through the driver (``_dependency_error``)."""

    __slots__ = ("_facts",)

    def __init__(self, facts: Facts) -> None:
        self._facts = facts

    def ask(self, query: NeedMembership | NeedAssistant | NeedChat | NeedGrant) -> Any:
        try:
            return ask_facts(self._facts, query)
        except Exception as exc:
            raise _dependency_error(query, exc) from None


def _no_body_reader(query: Query) -> Any:
    raise RuntimeError("the adapter supplied no way to read the body")


def _needs_adecide(query: Query) -> Any:
    raise TypeError("async facts need adecide(), not decide()")


def ask_facts(facts: Facts, query: NeedMembership | NeedAssistant | NeedChat | NeedGrant) -> Any:
    """Answer a facts query from a synchronous ``Facts`` store."""
    if isinstance(query, NeedMembership):
        return facts.membership(query.user, query.workspace)
    if isinstance(query, NeedAssistant):
        return facts.assistant(query.assistant_id)
    if isinstance(query, NeedChat):
        return facts.chat(query.chat_id)
    return facts.has_grant(query.user, query.assistant_id)


def run_flow(flow: Flow, answer: Callable[[Query], Any]) -> Decision:
    """Drive ``flow`` with a plain answering function (tests, the CLI, custom hosts)."""
    return _drive(flow, _Everything(answer))


class _Everything(dict[type, Callable[[Any], Any]]):
    """An answer table that routes every query type to one function."""

    def __init__(self, answer: Callable[[Query], Any]) -> None:
        super().__init__()
        self._answer = answer

    def __missing__(self, kind: type) -> Callable[[Any], Any]:
        return self._answer


def _first_step(flow: Flow) -> Decision | Query:
    """The decision if ``flow`` needs nothing, else its first query.

    Most decisions need no await at all (in-memory facts, a cached credential): the async
    driver starts its loop, a coroutine, only for a real query.
    """
    try:
        return next(flow)
    except StopIteration as done:
        decided: Decision = done.value
        return decided


def _drive(flow: Flow, answers: Mapping[type, Callable[[Any], Any]]) -> Decision:
    """Run ``flow`` to its decision, answering each query by its type."""
    send = flow.send
    try:
        query = next(flow)
        while True:
            try:
                value = answers[type(query)](query)
            except Exception as exc:
                query = flow.throw(_dependency_error(query, exc))
            else:
                query = send(value)
    except StopIteration as done:
        result: Decision = done.value
        return result
