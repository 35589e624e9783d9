"""The driver: runs the sans-IO core over the host's stores, for sync and async hosts.

One ``Authorizer`` per process: it holds the compiled core, the stores (facts, API keys,
JWKS, database sessions, rate-limit counters) and the credential cache. ``decide`` serves
WSGI and other sync callers; ``adecide`` serves ASGI, awaiting async stores and never
blocking the event loop on a network fetch or a database. Both call the same plain
functions of ``illumichat_authz.core``, over the same ``Lookups``:

- sync: the lookups are the stores' own bound methods, called by the core directly;
- async: the lookups answer at once what needs no waiting (sync facts, the credential
  cache, a JWKS key already held); any other raises ``Need``, and the decision is run
  again with that answer remembered (``core.Replay``): once per awaited lookup, the
  credential verified once, side effects (rate-limit hits, key-use records, the body)
  never repeated.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Literal, cast

from .audit.log import DecisionLog
from .compile import build_core, setting
from .config import Settings, load_settings
from .core import Core, CredentialSource, Need, Query, Replay, decide, decide_access, identify
from .core.lookups import FACT_LOOKUPS, Lookups, propagates
from .core.trace import new_tuple
from .credentials.apikeys import ApiKeyRecord, ApiKeyStore
from .credentials.jwk import JwkKey
from .credentials.sessions import SessionStore
from .decision import Decision
from .errors import AuthzError, BadRequestError, ConfigurationError, DependencyUnavailableError
from .facts import AsyncFacts, Facts, FetchingFacts, InMemoryFacts
from .facts_file import load_facts_file
from .observers import Observer, Observers
from .principal import Principal
from .ratelimit import RateLimitOutcome, RateLimitSpec
from .reasons import Reason
from .render import REVISION_HEADER
from .request import RequestFacts
from .stores import open_database
from .stores.api_keys import SqliteApiKeyStore
from .stores.credential_cache import CredentialCache
from .stores.jwks import JwksCache, UrllibJwksFetcher
from .stores.ratelimit import RateLimiter
from .stores.sessions import SqliteSessionStore

if TYPE_CHECKING:
    from .credentials.sessions import SessionRecord
    from .rollout.live import PolicyRollout

__all__ = ["AsyncBodyReader", "Authorizer", "BodyReader", "build_core"]

_log = logging.getLogger("illumichat_authz")

#: Reads at most ``max_bytes`` of the body; ``None`` when the body is larger.
BodyReader = Callable[[int], bytes | None]
AsyncBodyReader = Callable[[int], Awaitable[bytes | None]]

#: Lookups that change something (or consume the request): a first run asks the driver
#: for them, so that a replay answers them from memory instead of doing them again.
_SIDE_EFFECTS = ("body", "rate_limit_hit")


class StoreLookups:
    """``core.Lookups`` as plain attributes: each one a store's bound method (or a small
    function in front of one), called by the core with no wrapper in between."""

    __slots__ = (
        "api_key",
        "body",
        "cache_principal",
        "cached_principal",
        "has_grant",
        "jwk",
        "membership",
        "rate_limit_hit",
        "record_api_key_use",
        "resource",
        "session",
    )

    def __init__(self, answers: dict[str, Callable[..., Any]]) -> None:
        for name in self.__slots__:
            setattr(self, name, answers[name])


def _asks(lookup: str) -> Callable[..., Any]:
    """A lookup that cannot answer now: the driver will (``core.Need``)."""

    def ask(*args: Any) -> Any:
        raise Need(Query(lookup, args))

    return ask


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
        credential_cache: CredentialCache | None = None,
        clock: Callable[[], float] = time.time,
        decision_log: DecisionLog | None = None,
    ) -> None:
        self.core = core
        #: What watches decisions (``observers``): the decision log, metrics, traces.
        self._watchers: list[Observer] = []
        self._observers: Observers | None = None
        self.decision_log = decision_log
        self.api_keys = api_keys
        self.jwks = jwks
        self.sessions = sessions
        # Built on first use: a limits memory storage starts a thread.
        self._rate_limiter = rate_limiter
        #: Verified credentials, by what was presented (``max_entries=0``: no caching).
        self.credential_cache = (
            credential_cache if credential_cache is not None else CredentialCache()
        )
        self.clock = clock
        self.facts = facts if facts is not None else InMemoryFacts()
        #: ``[database]`` opened by ``from_settings`` (``stores.sql.database.Database``).
        self.database: Any = None
        #: Swaps in checked policies (``rollout``: watched files, database versions).
        self.rollout: PolicyRollout | None = None
        #: When a catch-up last fell short of a requested revision, and what it reached.
        self._beyond: tuple[float, int] = (float("-inf"), -1)

    @property
    def decision_log(self) -> DecisionLog | None:
        """Where every deny (and allows, as configured) is logged (``audit``); ``None``: off."""
        return self._decision_log

    @decision_log.setter
    def decision_log(self, log: DecisionLog | None) -> None:
        old = getattr(self, "_decision_log", None)
        self._decision_log = log
        self._watchers = [w for w in self._watchers if w is not old]
        if log is not None:
            self._watchers.insert(0, log)
        self._observers = Observers(self._watchers) if self._watchers else None

    @property
    def observers(self) -> tuple[Observer, ...]:
        """What watches decisions now, the decision log first."""
        return tuple(self._watchers)

    def observe(self, observer: Observer) -> None:
        """Have ``observer`` watch every decision from now on (``observers``)."""
        self._watchers.append(observer)
        self._observers = Observers(self._watchers)

    def unobserve(self, observer: Observer) -> None:
        self._watchers = [w for w in self._watchers if w is not observer]
        self._observers = Observers(self._watchers) if self._watchers else None

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        config_file: str | None = None,
        facts: Facts | AsyncFacts | None = None,
        api_keys: ApiKeyStore | None = None,
        jwks: JwksCache | None = None,
        sessions: SessionStore | None = None,
        rate_limiter: RateLimiter | None = None,
        credential_cache: CredentialCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Authorizer:
        """Build everything the settings describe (stores may be passed in instead)."""
        settings = settings or load_settings(config_file)
        core = build_core(settings)
        database: Any = None
        if facts is None and settings.facts.file is not None:
            if settings.database.url is not None:
                raise ConfigurationError(
                    "facts come from [facts] file or from [database] url, not both: "
                    "load the file into the database with `illumichat-authz facts load`"
                )
            with setting("facts.file"):
                facts = load_facts_file(settings.facts.file)
        elif facts is None and settings.database.url is not None:
            database = open_database(settings)
            facts = database.facts
        if api_keys is None and settings.api_keys.database is not None:
            api_keys = SqliteApiKeyStore(settings.api_keys.database)
        if settings.database.url is not None and database is None:
            database = open_database(settings)  # facts given: API keys still in the database
        if settings.session.database_sessions and settings.session.database is None:
            if database is None:
                raise ConfigurationError(
                    "session.database_sessions: the sessions table is read from [database] "
                    "url, which is not set"
                )
            if sessions is None:
                from .stores.sql.sessions import SqlSessionStore

                sessions = SqlSessionStore(database.engine)
        if sessions is None and settings.session.database is not None:
            sessions = SqliteSessionStore(settings.session.database)
        url = settings.auth0.resolved_jwks_url
        if jwks is None and url is not None:
            jwks = JwksCache(
                url=url,
                fetcher=UrllibJwksFetcher(),
                ttl_s=settings.auth0.jwks_ttl_s,
                min_refresh_s=settings.auth0.jwks_min_refresh_s,
                max_stale_s=settings.auth0.jwks_max_stale_s,
            )
        if rate_limiter is None:
            limits = settings.rate_limits
            rate_limiter = RateLimiter(
                storage_uri=limits.storage, strategy=limits.strategy, timeout_s=limits.timeout_s
            )
        if credential_cache is None:
            credential_cache = CredentialCache(revocable_ttl_s=settings.api_keys.cache_ttl_s)
        authorizer = cls(
            core=core,
            facts=facts,
            api_keys=api_keys,
            jwks=jwks,
            sessions=sessions,
            rate_limiter=rate_limiter,
            credential_cache=credential_cache,
            clock=clock,
            decision_log=_decision_log(settings, core, database),
        )
        if database is not None:
            from .stores.sql.api_keys import CredentialRevocations

            if api_keys is None:
                authorizer.api_keys = database.api_keys
            # A key revoked anywhere leaves this process's credential cache at once.
            database.feed.subscribers.append(CredentialRevocations(authorizer.credential_cache))
            authorizer.database = database
            database.feed.start()
        authorizer.rollout = _rollout(settings, authorizer, database)
        _telemetry(settings, authorizer)
        return authorizer

    def authorized_filter(
        self, principal: Principal, action: str, kind: str, *, workspace: str | None = None
    ) -> Any:
        """The rows of ``kind`` ``principal`` may do ``action`` on, as a SQLAlchemy condition
        on the kind's table (``database.tables.resource(kind).table``) that composes with the
        host's own ``WHERE``, ``ORDER BY`` and ``LIMIT`` (``stores.sql.filters``). Needs
        ``[database]``; the principal's facts are read now, from the database."""
        if self.database is None:
            raise ConfigurationError("authorized_filter needs [database] url")
        from .stores.sql.engine import unreachable
        from .stores.sql.filters import authorized_filter

        with unreachable():
            return authorized_filter(
                self.core,
                self.database.facts.engine,
                self.database.tables,
                principal,
                action,
                kind,
                workspace=workspace,
            )

    def _needs_catch_up(self, want: Consistency) -> bool:
        database = self.database
        if database is None or want is None:
            return False
        if want == "full":
            return True
        feed = database.feed
        if not isinstance(want, int) or feed.applied >= want:
            return False
        # A revision that a catch-up just now did not reach is from nowhere (or a client
        # forcing reads): asking again at most every _FUTURE_RECHECK_S bounds its cost.
        seen_at, seen = self._beyond
        return not (want > seen and time.monotonic() - seen_at < _FUTURE_RECHECK_S)

    def _catch_up(self, want: Consistency) -> Decision | None:
        """Bring the facts to ``want`` (one read of the revision and the change log);
        ``None`` when they are, or the 503 when the database cannot be reached."""
        if not self._needs_catch_up(want):
            return None
        try:
            applied = self.database.feed.check()
            if isinstance(want, int) and applied < want:
                self._beyond = (time.monotonic(), applied)
        except Exception as exc:
            _log.warning("facts could not be brought up to date: %s", type(exc).__name__)
            return Decision.of(
                Reason.FACTS_UNAVAILABLE,
                "facts are unavailable; retry later",
                policy_revision=self.core.policy_revision,
            )
        return None

    def close(self) -> None:
        """Stop what ``from_settings`` started (the database's change feed and pool) and
        write what the decision log still holds."""
        if self.rollout is not None:
            self.rollout.close()
        if self.decision_log is not None:
            self.decision_log.close()
        if self.database is not None:
            self.database.close()

    async def aclose(self) -> None:
        """Close what async decisions opened on the running event loop (the database's
        and the rate limiter's async connections); an async host calls it when it shuts
        down (a lifespan), before its loop ends. ``close`` still stops the rest."""
        aclose = getattr(self._fetching, "aclose", None)
        if aclose is not None:
            await aclose()
        if self._rate_limiter is not None:
            await self._rate_limiter.aclose()

    # --- the public decisions: each one, decided, then given to the decision log ------
    def decide(
        self,
        request: RequestFacts,
        *,
        principal: Principal | None = None,
        read_body: BodyReader | None = None,
        at_least: Consistency = None,
    ) -> Decision:
        """Decide ``request`` (see ``core.decide``); ``read_body`` for webhook routes.

        With ``[database]``: ``at_least`` (or the request's ``X-Authz-Revision``) is the
        facts revision the decision must see at least, ``"full"`` the database's newest;
        the decision carries the revision it saw (``facts_revision``)."""
        watch = self._observers
        if watch is None:
            return self._decide_unlogged(request, principal, read_body, at_least)
        started = perf_counter_ns()
        decision = self._decide_unlogged(request, principal, read_body, at_least)
        if decision.status != 200 or watch.allows:  # an allow nobody wants costs no call
            watch.record(decision, request, started)
        return decision

    async def adecide(
        self,
        request: RequestFacts,
        *,
        principal: Principal | None = None,
        read_body: AsyncBodyReader | None = None,
        at_least: Consistency = None,
    ) -> Decision:
        """:meth:`decide` for async hosts: awaits what must be awaited."""
        watch = self._observers
        if watch is None:
            return await self._adecide_unlogged(request, principal, read_body, at_least)
        started = perf_counter_ns()
        decision = await self._adecide_unlogged(request, principal, read_body, at_least)
        if decision.status != 200 or watch.allows:
            watch.record(decision, request, started)
        return decision

    def decide_access(
        self,
        *,
        principal: Principal,
        action: str,
        resource_kind: str | None = None,
        resource_id: str | None = None,
        workspace: str | None = None,
        at_least: Consistency = None,
    ) -> Decision:
        """Decide ``action`` on a resource without an HTTP request (see ``core.decide_access``);
        ``at_least`` as for :meth:`decide`."""
        watch = self._observers
        if watch is None:
            return self._decide_access_unlogged(
                principal, action, resource_kind, resource_id, workspace, at_least
            )
        started = perf_counter_ns()
        decision = self._decide_access_unlogged(
            principal, action, resource_kind, resource_id, workspace, at_least
        )
        if decision.status != 200 or watch.allows:
            watch.record(decision, None, started)
        return decision

    async def adecide_access(
        self,
        *,
        principal: Principal,
        action: str,
        resource_kind: str | None = None,
        resource_id: str | None = None,
        workspace: str | None = None,
        at_least: Consistency = None,
    ) -> Decision:
        """:meth:`decide_access` for async hosts."""
        watch = self._observers
        started = perf_counter_ns() if watch is not None else 0
        decision = await self._adecide_access_unlogged(
            principal=principal,
            action=action,
            resource_kind=resource_kind,
            resource_id=resource_id,
            workspace=workspace,
            at_least=at_least,
        )
        if watch is not None:
            watch.record(decision, None, started)
        return decision

    def decide_access_many(
        self,
        *,
        principal: Principal,
        action: str,
        resource_kind: str,
        resource_ids: Sequence[str],
        workspace: str | None = None,
        at_least: Consistency = None,
    ) -> list[Decision]:
        """:meth:`decide_access` for each of ``resource_ids``, in order (a page of a list).

        With ``[database]`` the facts of every resource not cached (each one's row, the
        caller's membership in its workspace, the caller's grant) are one round trip."""
        watch = self._observers
        started = perf_counter_ns() if watch is not None else 0
        decisions = self._decide_access_many_unlogged(
            principal=principal,
            action=action,
            resource_kind=resource_kind,
            resource_ids=resource_ids,
            workspace=workspace,
            at_least=at_least,
        )
        if watch is not None:
            for decision in decisions:
                watch.record(decision, None, started)
        return decisions

    async def adecide_access_many(
        self,
        *,
        principal: Principal,
        action: str,
        resource_kind: str,
        resource_ids: Sequence[str],
        workspace: str | None = None,
        at_least: Consistency = None,
    ) -> list[Decision]:
        """:meth:`decide_access_many` for async hosts (the round trip is awaited)."""
        watch = self._observers
        started = perf_counter_ns() if watch is not None else 0
        decisions = await self._adecide_access_many_unlogged(
            principal=principal,
            action=action,
            resource_kind=resource_kind,
            resource_ids=resource_ids,
            workspace=workspace,
            at_least=at_least,
        )
        if watch is not None:
            for decision in decisions:
                watch.record(decision, None, started)
        return decisions

    def identify(self, request: RequestFacts) -> Decision:
        """Only who is calling (see ``core.identify``): 200 with the principal, or the deny."""
        watch = self._observers
        started = perf_counter_ns() if watch is not None else 0
        decision = self._identify_unlogged(request)
        if watch is not None:
            watch.record(decision, request, started)
        return decision

    async def aidentify(self, request: RequestFacts) -> Decision:
        """:meth:`identify` for async hosts."""
        watch = self._observers
        started = perf_counter_ns() if watch is not None else 0
        decision = await self._aidentify_unlogged(request)
        if watch is not None:
            watch.record(decision, request, started)
        return decision

    # --- sync -----------------------------------------------------------------------
    def _decide_unlogged(
        self,
        request: RequestFacts,
        principal: Principal | None = None,
        read_body: BodyReader | None = None,
        at_least: Consistency = None,
    ) -> Decision:
        """Decide ``request`` (see ``core.decide``); ``read_body`` for webhook routes.

        With ``[database]``: ``at_least`` (or the request's ``X-Authz-Revision``) is the
        facts revision the decision must see at least, ``"full"`` the database's newest;
        the decision carries the revision it saw (``facts_revision``)."""
        if self.database is not None:
            try:
                want = at_least if at_least is not None else requested_revision(request)
            except BadRequestError as exc:
                return Decision.of(
                    exc.reason, exc.message, policy_revision=self.core.policy_revision
                )
            behind = self._catch_up(want)
            if behind is not None:
                return behind
            return _stamped(self._decide(self.core, request, principal, read_body), self.database)
        return self._decide(self.core, request, principal, read_body)

    def _decide(
        self,
        core: Core,
        request: RequestFacts,
        principal: Principal | None,
        read_body: BodyReader | None,
    ) -> Decision:
        """One decision over one ``core``, read once: a policy swapped meanwhile is the
        next decision's (no decision sees parts of two policies)."""
        try:
            return decide(
                request, core, now=self.clock(), lookups=self._lookups, principal=principal
            )
        except Need as need:
            # A side effect (a rate-limit hit, the body) or a fact the cache lacks: answered
            # once, then the decision runs again over the answers.
            inline = self._sync if read_body is None else {**self._sync, "body": read_body}
            return self._run(need, Replay(inline), decide, request, core, now=self.clock())

    def _run(
        self,
        need: Need,
        replay: Replay,
        question: Callable[..., Decision],
        *args: Any,
        **kwargs: Any,
    ) -> Decision:
        """The sync driver's replay: every run answers what the previous one lacked (facts
        a round trip at a time, everything else inline), so it ends; bounded anyway."""
        for _ in range(_MAX_RUNS):
            query = need.query
            if (
                query.lookup in FACT_LOOKUPS
                and self._fetching is not None
                and query not in replay.answers
            ):
                principal = need.principal
                self._fetched(replay, [query], principal.user_id if principal else None)
            try:
                return question(*args, lookups=replay, principal=need.principal, **kwargs)
            except Need as again:
                need = again
        _log.error("decision abandoned: %r was still unanswered", need.query)
        return Decision.of(Reason.INTERNAL_ERROR, "the decision could not be completed")

    def _fetched(self, replay: Replay, queries: list[Query], user: str | None) -> None:
        """Answer ``queries`` (and the facts read with them) in one round trip, or their
        failure; ``user``: whose decisions they are."""
        try:
            answers = cast(FetchingFacts, self._fetching).fetch(queries, user)
        except BaseException as exc:
            if propagates(exc):
                raise
            for query in queries:
                replay.fail(query, exc)  # each decision's one try makes it a deny
            return
        for answered, value in answers.items():
            replay.answer(answered, value)

    def _decide_access_many_unlogged(
        self,
        *,
        principal: Principal,
        action: str,
        resource_kind: str,
        resource_ids: Sequence[str],
        workspace: str | None = None,
        at_least: Consistency = None,
    ) -> list[Decision]:
        """:meth:`decide_access` for each of ``resource_ids``, in order (a page of a list).

        With ``[database]`` the facts of every resource not cached (each one's row, the
        caller's membership in its workspace, the caller's grant) are one round trip."""
        if self.database is not None:
            behind = self._catch_up(at_least)
            if behind is not None:
                return [behind] * len(resource_ids)
        ask = self._batch(action, resource_kind, workspace)
        decisions, pending = self._first_runs(ask, principal, resource_ids, self._lookups)
        if pending:
            shared = Replay(self._sync)
            facts = [need.query for _, need in pending if need.query.lookup in FACT_LOOKUPS]
            if facts and self._fetching is not None:
                self._fetched(shared, facts, principal.user_id)
            for index, need in pending:  # one principal, no side effects: one replay
                decisions[index] = self._run(need, shared, ask, resource_id=resource_ids[index])
        return self._stamp_all(decisions)

    def _batch(
        self, action: str, resource_kind: str, workspace: str | None
    ) -> Callable[..., Decision]:
        return functools.partial(
            decide_access,
            self.core,  # read once: every item of the batch is decided by one policy
            action=action,
            resource_kind=resource_kind,
            workspace=workspace,
        )

    @staticmethod
    def _first_runs(
        ask: Callable[..., Decision], principal: Principal, ids: Sequence[str], lookups: Lookups
    ) -> tuple[list[Decision], list[tuple[int, Need]]]:
        """Each item decided from what is at hand; those that need more, with their need."""
        decisions: list[Decision] = []
        pending: list[tuple[int, Need]] = []
        for index, resource_id in enumerate(ids):
            try:
                decisions.append(ask(principal=principal, resource_id=resource_id, lookups=lookups))
            except Need as need:
                decisions.append(_UNDECIDED)
                pending.append((index, need))
        return decisions, pending

    def _stamp_all(self, decisions: list[Decision]) -> list[Decision]:
        database = self.database
        return decisions if database is None else [_stamped(d, database) for d in decisions]

    def _decide_access_unlogged(
        self,
        principal: Principal,
        action: str,
        resource_kind: str | None,
        resource_id: str | None,
        workspace: str | None,
        at_least: Consistency,
    ) -> Decision:
        database = self.database
        if database is not None:
            behind = self._catch_up(at_least)
            if behind is not None:
                return behind
        core = self.core
        try:
            decision = decide_access(
                core,
                principal=principal,
                action=action,
                resource_kind=resource_kind,
                resource_id=resource_id,
                workspace=workspace,
                lookups=self._lookups,
            )
        except Need as need:
            decision = self._run(
                need,
                Replay(self._sync),
                decide_access,
                core,
                action=action,
                resource_kind=resource_kind,
                resource_id=resource_id,
                workspace=workspace,
            )
        return decision if database is None else _stamped(decision, database)

    def _identify_unlogged(self, request: RequestFacts) -> Decision:
        """Only who is calling (see ``core.identify``): 200 with the principal, or the deny."""
        return identify(request, self.core, now=self.clock(), lookups=self._lookups)

    # --- async ----------------------------------------------------------------------
    async def _adecide_unlogged(
        self,
        request: RequestFacts,
        principal: Principal | None = None,
        read_body: AsyncBodyReader | None = None,
        at_least: Consistency = None,
    ) -> Decision:
        """:meth:`decide` for async hosts: awaits what must be awaited."""
        if self.database is not None:
            try:
                want = at_least if at_least is not None else requested_revision(request)
            except BadRequestError as exc:
                return Decision.of(
                    exc.reason, exc.message, policy_revision=self.core.policy_revision
                )
            if self._needs_catch_up(want):
                behind = await asyncio.to_thread(self._catch_up, want)
                if behind is not None:
                    return behind
            return _stamped(
                await self._adecide(self.core, request, principal, read_body), self.database
            )
        return await self._adecide(self.core, request, principal, read_body)

    async def _adecide(
        self,
        core: Core,
        request: RequestFacts,
        principal: Principal | None,
        read_body: AsyncBodyReader | None,
    ) -> Decision:
        try:
            return decide(
                request, core, now=self.clock(), lookups=self._alookups, principal=principal
            )
        except Need as need:
            return await self._arun(need, read_body, decide, request, core, now=self.clock())

    async def _adecide_access_unlogged(
        self,
        *,
        principal: Principal,
        action: str,
        resource_kind: str | None = None,
        resource_id: str | None = None,
        workspace: str | None = None,
        at_least: Consistency = None,
    ) -> Decision:
        """:meth:`decide_access` for async hosts."""
        if self.database is not None:
            if self._needs_catch_up(at_least):
                behind = await asyncio.to_thread(self._catch_up, at_least)
                if behind is not None:
                    return behind
            return _stamped(
                await self._adecide_access(
                    principal, action, resource_kind, resource_id, workspace
                ),
                self.database,
            )
        return await self._adecide_access(principal, action, resource_kind, resource_id, workspace)

    async def _adecide_access_many_unlogged(
        self,
        *,
        principal: Principal,
        action: str,
        resource_kind: str,
        resource_ids: Sequence[str],
        workspace: str | None = None,
        at_least: Consistency = None,
    ) -> list[Decision]:
        """:meth:`decide_access_many` for async hosts (the round trip is awaited)."""
        if self.database is not None and self._needs_catch_up(at_least):
            behind = await asyncio.to_thread(self._catch_up, at_least)
            if behind is not None:
                return [behind] * len(resource_ids)
        ask = self._batch(action, resource_kind, workspace)
        decisions, pending = self._first_runs(ask, principal, resource_ids, self._alookups)
        if pending:
            shared = Replay(self._ainline)
            facts = [need.query for _, need in pending if need.query.lookup in FACT_LOOKUPS]
            if facts and self._fetching is not None:
                await self._afetched(shared, facts, principal.user_id)
            for index, need in pending:
                decisions[index] = await self._arun(
                    need, None, ask, resource_id=resource_ids[index], replay=shared
                )
        return self._stamp_all(decisions)

    async def _adecide_access(
        self,
        principal: Principal,
        action: str,
        resource_kind: str | None,
        resource_id: str | None,
        workspace: str | None,
    ) -> Decision:
        core = self.core
        try:
            return decide_access(
                core,
                principal=principal,
                action=action,
                resource_kind=resource_kind,
                resource_id=resource_id,
                workspace=workspace,
                lookups=self._alookups,
            )
        except Need as need:
            return await self._arun(
                need,
                None,
                decide_access,
                core,
                action=action,
                resource_kind=resource_kind,
                resource_id=resource_id,
                workspace=workspace,
            )

    async def _aidentify_unlogged(self, request: RequestFacts) -> Decision:
        """:meth:`identify` for async hosts."""
        core = self.core
        try:
            return identify(request, core, now=self.clock(), lookups=self._alookups)
        except Need as need:
            return await self._arun(need, None, identify, request, core, now=self.clock())

    async def _arun(
        self,
        need: Need,
        read_body: AsyncBodyReader | None,
        question: Callable[..., Decision],
        *args: Any,
        replay: Replay | None = None,
        **kwargs: Any,
    ) -> Decision:
        """Await what the decision needs, one lookup at a time, and run it again
        (``replay``: a batch's, holding what it read already)."""
        if replay is None:
            replay = Replay(self._ainline)
        while True:
            query = need.query
            if query in replay.answers:
                pass  # answered with a batch
            elif self._fetching is not None and query.lookup in FACT_LOOKUPS:
                user = need.principal.user_id if need.principal is not None else None
                await self._afetched(replay, [query], user)
            else:
                try:
                    replay.answer(query, await self._aanswer(query, read_body))
                except BaseException as exc:
                    if propagates(exc):  # cancellation, interpreter exit
                        raise
                    replay.fail(query, exc)  # the decision's one try will make it a deny
            try:
                return question(*args, lookups=replay, principal=need.principal, **kwargs)
            except Need as again:
                need = again

    async def _afetched(self, replay: Replay, queries: list[Query], user: str | None) -> None:
        """:meth:`_fetched` for the async driver: the round trip is awaited."""
        try:
            answers = await cast(FetchingFacts, self._fetching).afetch(queries, user)
        except BaseException as exc:
            if propagates(exc):
                raise
            for query in queries:
                replay.fail(query, exc)
            return
        for answered, value in answers.items():
            replay.answer(answered, value)

    async def _aanswer(self, query: Query, read_body: AsyncBodyReader | None) -> Any:
        lookup, args = query
        if lookup == "body":
            if read_body is None:
                raise RuntimeError("the adapter supplied no way to read the body")
            return await read_body(*args)
        answer = self._awaited[lookup](*args)
        return await answer if inspect.isawaitable(answer) else answer

    # --- the answer tables ------------------------------------------------------------
    @property
    def facts(self) -> Facts | AsyncFacts:
        return self._facts

    @facts.setter
    def facts(self, facts: Facts | AsyncFacts) -> None:
        # The lookups hold the facts' bound methods: rebuild them so a swap takes effect.
        self._facts = facts
        self._build_lookups()

    def _build_lookups(self) -> None:
        facts: Any = self._facts
        facts_async = inspect.iscoroutinefunction(getattr(facts, "membership", None))
        cache = self.credential_cache
        get, put, key = cache.get, cache.put, cache.key

        def cached_principal(
            source: CredentialSource, credential: str, now: float
        ) -> Principal | None:
            return get(key(source, credential), now=now)

        def cache_principal(
            source: CredentialSource,
            credential: str,
            principal: Principal,
            now: float,
            revocable: bool,
        ) -> None:
            put(key(source, credential), principal, now=now, revocable=revocable)

        #: A cache over a database: the lookups ask the cache, the drivers ``fetch`` a miss.
        self._fetching: FetchingFacts | None = None
        fact_lookups: dict[str, Callable[..., Any]] = {
            "membership": facts.membership,
            "resource": facts.resource,
            "has_grant": facts.has_grant,
        }
        if isinstance(facts, FetchingFacts):
            self._fetching = facts
            fact_lookups = dict(facts.cached)
        cache_lookups: dict[str, Callable[..., Any]] = {
            "cached_principal": cached_principal,
            "cache_principal": cache_principal,
        }
        sync: dict[str, Callable[..., Any]] = {
            **fact_lookups,
            **cache_lookups,
            "api_key": self._api_key,
            "record_api_key_use": self._record_api_key_use,
            "jwk": self._jwk,
            "session": self._session,
            "body": _no_body_reader,
            "rate_limit_hit": self._rate_limit_hit,
        }
        if facts_async:
            for name in fact_lookups:
                sync[name] = _needs_adecide
        #: Everything answered synchronously (the sync driver's replay).
        self._sync = sync
        # The sync first run: side effects through the driver, so a replay never repeats them.
        first = {**sync, **{name: _asks(name) for name in _SIDE_EFFECTS}}
        self._lookups: Lookups = cast(Lookups, StoreLookups(first))
        #: What the async driver answers without waiting.
        self._ainline: dict[str, Callable[..., Any]] = {**cache_lookups, "jwk": self._jwk_held}
        if not facts_async:
            self._ainline.update(fact_lookups)
        self._awaited: dict[str, Callable[..., Any]] = {
            **fact_lookups,
            "api_key": lambda key_id: asyncio.to_thread(self._api_key, key_id),
            # A throttled write at most: off the event loop like the lookup.
            "record_api_key_use": lambda key_id: asyncio.to_thread(
                self._record_api_key_use, key_id
            ),
            "jwk": lambda kid, alg: self._jwks().aget_key(kid, alg),
            "session": lambda token: asyncio.to_thread(self._session, token),
            "rate_limit_hit": lambda key, spec: self._limiter().ahit(key, spec),
        }
        afirst = {name: self._ainline.get(name) or _asks(name) for name in StoreLookups.__slots__}
        self._alookups: Lookups = cast(Lookups, StoreLookups(afirst))
        #: Shadow mode's (``rollout.shadow``): the same reads, and nothing counted, consumed
        #: or remembered: a limited route counts as not limited, the body is not read.
        self._shadow_inline: dict[str, Callable[..., Any]] = {
            **sync,
            "cache_principal": _ignored,
            "record_api_key_use": _ignored,
            "rate_limit_hit": _uncounted,
        }
        self._shadow_lookups: Lookups = cast(Lookups, StoreLookups(self._shadow_inline))

    def shadow_decide(
        self, core: Core, request: RequestFacts, principal: Principal | None
    ) -> Decision:
        """What ``core`` would decide for ``request`` (shadow mode, off the request path),
        ``principal``: the caller the live decision verified. Nothing is counted,
        consumed or cached; the facts are read as for a live decision."""
        try:
            decision = decide(
                request, core, now=self.clock(), lookups=self._shadow_lookups, principal=principal
            )
        except Need as need:
            replay = Replay(self._shadow_inline)
            decision = self._run(need, replay, decide, request, core, now=self.clock())
        return decision if self.database is None else _stamped(decision, self.database)

    # --- the stores behind the lookups ------------------------------------------------
    def _api_key(self, key_id: str) -> ApiKeyRecord | None:
        return self._api_keys().get(key_id)

    def _record_api_key_use(self, key_id: str) -> None:
        """Last-used time (throttled by the store); a failure never changes the decision."""
        try:
            self._api_keys().touch(key_id, now=self.clock())
        except Exception as exc:
            _log.warning("API key %s: could not record last use: %s", key_id, type(exc).__name__)

    def _jwk(self, kid: str, alg: str) -> JwkKey:
        return self._jwks().get_key(kid, alg)

    def _jwk_held(self, kid: str, alg: str) -> JwkKey:
        """The key when the JWKS cache holds a fresh set (no fetch due); else ``Need``.

        The cache's own plan/settle pair (the two halves ``get_key`` and ``aget_key``
        share), without the fetch in between.
        """
        jwks = self._jwks()
        now = jwks._clock()
        if jwks._plan(kid, now).fetch:
            raise Need(Query("jwk", (kid, alg)))
        return jwks._settle(kid, alg, now)

    def _session(self, token: str) -> SessionRecord | None:
        return self._sessions().get_session(token)

    def _rate_limit_hit(self, key: str, spec: RateLimitSpec) -> RateLimitOutcome:
        return self._limiter().hit(key, spec)

    def revoke_api_key(self, key_id: str) -> bool:
        """Revoke in the store and drop the key from the credential cache, at once."""
        revoked = self._api_keys().revoke(key_id, now=self.clock())
        self.credential_cache.forget(key_id)
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


#: A place in a batch's list not decided yet (never returned).
_UNDECIDED = Decision.of(Reason.INTERNAL_ERROR, "not decided")

#: Runs of one decision before the sync driver gives up (each run answers at least one
#: more lookup; a decision asks at most five).
_MAX_RUNS = 8

#: A facts revision the decision must see at least, ``"full"`` for the database's newest.
Consistency = int | Literal["full"] | None

_MAX_REVISION_DIGITS = 18
#: How often a revision newer than the database's may make an instance read it again.
_FUTURE_RECHECK_S = 0.1


def requested_revision(request: RequestFacts) -> int | None:
    """The ``X-Authz-Revision`` a client sent back (read-your-writes), if any."""
    found: str | None = None
    for name, value in request.headers:
        if name == REVISION_HEADER:
            if found is not None:
                raise BadRequestError(
                    f"more than one {REVISION_HEADER} header", reason=Reason.BAD_HEADER
                )
            found = value.strip(" \t")
    if found is None:
        return None
    if not (found.isascii() and found.isdigit() and len(found) <= _MAX_REVISION_DIGITS):
        raise BadRequestError(f"malformed {REVISION_HEADER} header", reason=Reason.BAD_HEADER)
    return int(found)


def _stamped(decision: Decision, database: Any) -> Decision:
    """``decision`` with the revision the facts were at (a tuple copy: no ``_replace``)."""
    return new_tuple(Decision, (*decision[:-2], database.facts.applied, decision[-1]))


def _ignored(*args: Any) -> None:
    return None


def _uncounted(key: str, spec: RateLimitSpec) -> RateLimitOutcome:
    return RateLimitOutcome(
        allowed=True, limit=spec.amount, remaining=spec.amount, reset_after_s=0.0
    )


def _no_body_reader(max_bytes: int) -> bytes | None:
    raise RuntimeError("the adapter supplied no way to read the body")


def _needs_adecide(*args: Any) -> Any:
    # A programming error, not an outage: a 500, not the 503 a failed lookup gets.
    raise AuthzError("async facts need adecide(), not decide()", reason=Reason.INTERNAL_ERROR)


def _rollout(settings: Settings, authorizer: Authorizer, database: Any) -> PolicyRollout | None:
    """What keeps the policy current: database versions, watched files, or nothing."""
    pol = settings.policies
    if pol.source == "database":
        if database is None:
            raise ConfigurationError("policies.source = database needs [database] url")
        from .rollout.database import DatabaseRollout

        rollout: PolicyRollout = DatabaseRollout(authorizer, settings, database)
        try:
            rollout.load()  # type: ignore[attr-defined]
        except BaseException:
            authorizer.close()
            raise
        return rollout.start()
    if pol.watch or pol.shadow_dir is not None:
        from .rollout.live import FileRollout

        return FileRollout(authorizer, settings).start()
    return None


def _telemetry(settings: Settings, authorizer: Authorizer) -> None:
    """``[telemetry]``: the decision counts for Prometheus, a span per decision. A part
    whose extra is missing is a configuration error, not a silent gap in the metrics."""
    cfg = settings.telemetry
    try:
        if cfg.metrics:
            import prometheus_client  # noqa: F401 - the exporter must be there to read them

            from .telemetry.counts import decision_metrics

            decision_metrics(authorizer)
        if cfg.traces:
            from .telemetry.otel import DecisionSpans, current_trace_id

            authorizer.observe(DecisionSpans())
            if authorizer.decision_log is not None:
                authorizer.decision_log.trace_ids = current_trace_id
    except ImportError as exc:
        authorizer.close()
        extra = "metrics" if cfg.metrics and "prometheus" in str(exc.name) else "otel"
        raise ConfigurationError(
            f"telemetry: {exc.name} is not installed: pip install 'illumichat-authz[{extra}]'"
        ) from None


def _decision_log(settings: Settings, core: Core, database: Any) -> DecisionLog | None:
    """``[decision_log]``'s sinks, or ``None`` when it names none."""
    cfg = settings.decision_log
    if not cfg.sinks:
        return None
    from .audit.sinks import LoggingSink, NdjsonSink

    sinks: list[Any] = []
    for name in cfg.sinks:
        if name == "logging":
            sinks.append(LoggingSink())
        elif name == "stdout":
            sinks.append(NdjsonSink.stdout())
        elif name == "database":
            if database is None:
                raise ConfigurationError("decision_log.sinks: 'database' needs [database] url")
            from .stores.sql.decision_log import SqlDecisionSink

            sinks.append(SqlDecisionSink(database.engine))
        else:
            path = name.removeprefix("file:")
            try:
                sinks.append(NdjsonSink(path))
            except OSError as exc:
                raise ConfigurationError(
                    f"decision_log.sinks: cannot open {path!r}: {exc.strerror}"
                ) from None
    return DecisionLog(
        sinks,
        allows=cfg.allow_rate,
        queue_size=cfg.queue_size,
        policy_revision=core.policy_revision or None,
    )
