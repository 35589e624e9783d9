"""Facts read from SQL, cached in process, each entry stamped with the revision it was read at.

The warm path is a dict lookup and a clock compare: an entry is served while the change
feed (``stores.sql.feed``) has confirmed the cache current within ``max_staleness_s``.
Past that bound (the database unreachable, the feed stopped) nothing cached is served:
every lookup goes to the database, and a lookup that fails there is the decision's 503,
never an allow from memory.

A miss is one round trip for all the facts a decision needs (``facts.FetchingFacts``):
the driver's lookups are the cache alone (``cached``, raising ``core.Need``), and the
driver answers a miss with :meth:`SqlFacts.fetch`, which reads a resource together with
the caller's membership in its workspace and the caller's grant on it, and the revision,
in one statement (``stores.sql.prepared``). An entry is kept only if no change newer than
that revision has been applied meanwhile (the feed evicts under the same lock), so an
eviction can never be overtaken by a stale read.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ARRAY,
    Engine,
    Select,
    String,
    and_,
    any_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    select,
)

from ...core.lookups import Need, Query
from ...facts import Assistant, Chat, Membership, Resource
from ...telemetry.counts import FETCH_BUCKETS_S, Histogram
from ...vocab import canonical
from .engine import AsyncReaders, is_postgres, reader
from .prepared import Prepared
from .schema import FactsTables, revision

if TYPE_CHECKING:
    pass

__all__ = ["SqlFacts"]

_Key = tuple[str, ...]
#: What one read found: (the cache it belongs in, its key, the lookup it answers, the value).
_Found = tuple[dict[Any, tuple[Any, int]], tuple[str, ...], Query, Any]
#: One statement to run: (its shape's name, how to build it, its parameters, what it answers).
_Plan = tuple[Any, Callable[[], Select[Any]], dict[str, Any], list[Query]]


class SqlFacts:
    """``facts.Facts`` over SQL: memberships, resources of every kind and grants."""

    def __init__(
        self,
        engine: Engine,
        tables: FactsTables | None = None,
        *,
        max_staleness_s: float = 5.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        async_url: str | None = None,
    ) -> None:
        self.engine = reader(engine)
        #: Where ``afetch`` reads (an async host's event loop waits on it, never blocks):
        #: ``async_url``'s driver (psycopg or asyncpg) on PostgreSQL; else a worker thread.
        self.async_readers = AsyncReaders(async_url or engine.url.render_as_string(False))
        self.tables = tables or FactsTables()
        self.max_staleness_s = max_staleness_s
        self.max_entries = max_entries
        self.clock = clock
        #: The revision every cached entry is current at (the feed's last applied change).
        self.applied = -1
        #: Until when (``clock``) cached entries may be served; 0: serve none.
        self.fresh_until = 0.0
        self._lock = threading.Lock()
        # One dict per fact, keyed without the fact's name: no key tuple built per hit.
        self._memberships: dict[tuple[str, str], tuple[Membership | None, int]] = {}
        self._resources: dict[tuple[str, str], tuple[Resource | None, int]] = {}
        self._grants: dict[tuple[str, str, str], tuple[bool, int]] = {}
        self._arrays = is_postgres(self.engine)
        #: For the metrics (``telemetry``): lookups answered from memory (a decision that
        #: fetches runs again, so its cached lookups count once per run), facts read from
        #: the database, and each round trip's time.
        self.hits = 0
        self.fetched = 0
        self.fetch_latency = Histogram(FETCH_BUCKETS_S)
        self._stats_lock = threading.Lock()
        #: The driver's lookups: the cache alone, a miss raises ``core.Need``.
        self.cached: Mapping[str, Callable[..., Any]] = {
            "membership": self.cached_membership,
            "resource": self.cached_resource,
            "has_grant": self.cached_has_grant,
        }

    # --- the cache (the core calls these through the driver) ------------------------------
    def cached_membership(self, user: str, workspace: str) -> Membership | None:
        hit = self._memberships.get((user, workspace))
        if hit is not None and self.clock() < self.fresh_until:
            self.hits += 1
            return hit[0]
        raise Need(Query("membership", (user, workspace)))

    def cached_resource(self, kind: str, id: str) -> Resource | None:
        hit = self._resources.get((kind, id))
        if hit is not None and self.clock() < self.fresh_until:
            self.hits += 1
            return hit[0]
        raise Need(Query("resource", (kind, id)))

    def cached_has_grant(self, user: str, kind: str, id: str) -> bool:
        hit = self._grants.get((user, kind, id))
        if hit is not None and self.clock() < self.fresh_until:
            self.hits += 1
            return hit[0]
        raise Need(Query("has_grant", (user, kind, id)))

    # --- a miss: one round trip -------------------------------------------------------------
    def fetch(self, queries: Sequence[Query], user: str | None = None) -> dict[Query, Any]:
        """Read the facts ``queries`` ask for, with, for resources, ``user``'s membership in
        each one's workspace and ``user``'s grant on it; keep and return them all.

        One statement per shape: the resources of one kind (any number of them) are one
        round trip, a membership or a grant another."""
        answers: dict[Query, Any] = {}
        for name, build, params, wanted in self._plans(queries, user):
            started = perf_counter_ns()
            rows = self._prepared_for(name, build, self.engine).rows(self.engine, params)
            self._timed(started, len(wanted))
            answers.update(self._found(wanted, user, rows))
        return answers

    async def afetch(self, queries: Sequence[Query], user: str | None = None) -> dict[Query, Any]:
        """:meth:`fetch` for an event loop: awaited on an async engine, else in a thread."""
        async_engine = self.async_readers.get()
        if async_engine is None:
            return await asyncio.to_thread(self.fetch, queries, user)
        answers: dict[Query, Any] = {}
        for name, build, params, wanted in self._plans(queries, user):
            prepared = self._prepared_for(name, build, async_engine)
            started = perf_counter_ns()
            rows = await prepared.arows(async_engine, params)
            self._timed(started, len(wanted))
            answers.update(self._found(wanted, user, rows))
        return answers

    async def aclose(self) -> None:
        """Close the async connections the running event loop read through."""
        await self.async_readers.aclose()

    # --- facts.Facts, for callers outside a decision -----------------------------------------
    def membership(self, user: str, workspace: str) -> Membership | None:
        try:
            return self.cached_membership(user, workspace)
        except Need as need:
            return self.fetch((need.query,))[need.query]  # type: ignore[no-any-return]

    def resource(self, kind: str, id: str) -> Resource | None:
        try:
            return self.cached_resource(kind, id)
        except Need as need:
            return self.fetch((need.query,))[need.query]  # type: ignore[no-any-return]

    def has_grant(self, user: str, kind: str, id: str) -> bool:
        try:
            return self.cached_has_grant(user, kind, id)
        except Need as need:
            return bool(self.fetch((need.query,))[need.query])

    # --- what the feed calls ----------------------------------------------------------------
    def confirm(self, rev: int) -> None:
        """The database is at ``rev`` and every change up to it is applied: fresh again."""
        if rev == self.applied:
            self.fresh_until = self.clock() + self.max_staleness_s

    def apply(self, rev: int, keys: Iterable[_Key] | None, removed: Collection[_Key] = ()) -> None:
        """Change ``rev`` touched ``keys`` (``None``: unknown, drop everything); of those,
        it deleted ``removed``: a cached one becomes "absent at ``rev``" instead of being
        evicted, so the next decision refuses without a read."""
        with self._lock:
            if keys is None:
                self._clear()
            else:
                for key in keys:
                    self._evict(key, rev, key in removed)
            self.applied = max(self.applied, rev)

    def reset(self, rev: int) -> None:
        """Start over at ``rev`` (first start, or a gap the change log cannot fill)."""
        with self._lock:
            self._clear()
            self.applied = rev

    def stale(self) -> None:
        """Serve nothing from memory until the feed confirms again."""
        self.fresh_until = 0.0

    @property
    def entries(self) -> int:
        return len(self._memberships) + len(self._resources) + len(self._grants)

    # --- internals ------------------------------------------------------------------------
    def _timed(self, started_ns: int, facts: int) -> None:
        elapsed = perf_counter_ns() - started_ns
        with self._stats_lock:
            self.fetched += facts
            self.fetch_latency.observe_ns(elapsed)

    def _clear(self) -> None:
        self._memberships.clear()
        self._resources.clear()
        self._grants.clear()

    def _evict(self, key: _Key, rev: int, gone: bool = False) -> None:
        fact, *rest = key
        tables: dict[str, dict[Any, tuple[Any, int]]] = {
            "membership": self._memberships,
            "resource": self._resources,
            "grant": self._grants,
        }
        table = tables.get(fact)
        if fact == "policy":  # a policy version change (rollout.database): no fact moved
            return
        if table is None:  # a key of a newer release: be safe
            self._clear()
            return
        entry = table.get(tuple(rest))
        if entry is not None and entry[1] < rev:
            if gone:
                table[tuple(rest)] = (False if fact == "grant" else None, rev)
            else:
                del table[tuple(rest)]

    def _prepared_for(self, name: Any, build: Callable[[], Select[Any]], engine: Any) -> Prepared:
        dialect = engine.dialect
        key = (name, dialect.name, dialect.driver)
        compiled = self.tables.compiled
        found = compiled.get(key)
        if found is None:
            found = compiled[key] = Prepared(dialect, build())
        return found

    def _plans(self, queries: Sequence[Query], user: str | None) -> list[_Plan]:
        """The statements for ``queries`` (each shape built once) and their parameters."""
        plans: list[_Plan] = []
        by_kind: dict[str, list[Query]] = {}
        for query in queries:
            lookup, args = query
            if lookup == "resource":
                by_kind.setdefault(args[0], []).append(query)
            elif lookup == "membership":
                plans.append(
                    (
                        "membership",
                        self._membership_statement,
                        {"user": args[0], "ws": args[1]},
                        [query],
                    )
                )
            elif lookup == "has_grant":
                kind = args[1]
                plans.append(
                    (
                        ("grant", kind),
                        functools.partial(self._grant_statement, kind),
                        {"user": args[0], "id": args[2]},
                        [query],
                    )
                )
            else:
                raise ValueError(f"not a fact lookup: {lookup!r}")
        for kind, of_kind in by_kind.items():
            ids = sorted({q.args[1] for q in of_kind})
            # One resource: ``id = $1`` (planned as a primary-key lookup); more: one array.
            one = len(ids) == 1
            params: dict[str, Any] = {"id": ids[0]} if one else {"ids": self._ids_param(ids)}
            if user is not None:
                params["user"] = user
            plans.append(
                (
                    ("resources", kind, user is not None, one),
                    functools.partial(self._resource_statement, kind, user is not None, one),
                    params,
                    of_kind,
                )
            )
        return plans

    def _found(
        self, wanted: list[Query], user: str | None, rows: list[tuple[Any, ...]]
    ) -> dict[Query, Any]:
        rev = int(rows[0][0])  # every statement reads the revision row: never empty
        lookup = wanted[0].lookup
        found: list[_Found] = []
        if lookup == "membership":
            query = wanted[0]
            member = _membership(query.args[0], query.args[1], rows[0][1], rows[0][2])
            found.append((self._memberships, query.args, query, member))
        elif lookup == "has_grant":
            query = wanted[0]
            found.append((self._grants, query.args, query, bool(rows[0][1])))
        else:
            kind = wanted[0].args[0]
            by_id = {row[1]: row for row in rows if row[1] is not None}
            members: dict[str, Membership | None] = {}  # a page's resources share workspaces
            for query in wanted:
                id = query.args[1]
                row = by_id.get(id)
                resource = None if row is None else _resource(kind, id, *row[2:6])
                found.append((self._resources, query.args, query, resource))
                if user is None or row is None or resource is None:
                    continue
                ws = resource.workspace
                if ws not in members:
                    member = members[ws] = _membership(user, ws, row[6], row[7])
                    found.append(
                        (self._memberships, (user, ws), Query("membership", (user, ws)), member)
                    )
                if row[8] is not None:
                    key = (user, kind, id)
                    found.append((self._grants, key, Query("has_grant", key), bool(row[8])))
        self._keep(found, rev)
        return {q: value for _, _, q, value in found}

    def _keep(self, found: Iterable[_Found], rev: int) -> None:
        with self._lock:
            # Read before a change the feed has already applied: that change may be this
            # very key's, and its eviction is past. Serve the values, do not keep them.
            if rev < self.applied:
                return
            if self.entries >= self.max_entries:
                self._clear()  # bounded: a full cache starts over (entries refill on use)
            for table, key, _, value in found:
                table[key] = (value, rev)

    def _membership_statement(self) -> Select[Any]:
        m = self.tables.memberships
        on = and_(m.user == bindparam("user"), m.workspace == bindparam("ws"))
        return (
            select(revision.c.revision, m.role, _or_active(m.status))
            .select_from(revision.outerjoin(m.table, on))
            .where(revision.c.id == 1)
        )

    def _grant_statement(self, kind: str) -> Select[Any]:
        held = self._held(kind, bindparam("id"))
        return select(revision.c.revision, held).where(revision.c.id == 1)

    def _held(self, kind: str, id: Any) -> Any:
        g = self.tables.grant(kind)
        return exists().where(g.user == bindparam("user"), g.id == id, g.of_kind())

    def _ids_param(self, ids: list[str]) -> Any:
        # PostgreSQL binds an array; SQLite reads a JSON array through json_each.
        return ids if self._arrays else json.dumps(ids)

    def _any_id(self, column: Any) -> Any:
        if self._arrays:
            return column == any_(cast(bindparam("ids"), ARRAY(String)))
        each = func.json_each(bindparam("ids")).table_valued("value")
        return column.in_(select(each.c.value))

    def _resource_statement(self, kind: str, with_caller: bool, one: bool) -> Select[Any]:
        """The rows of the resources ``ids`` names; ``with_caller``: with the caller's
        membership in each one's workspace and (for a kind with a visibility, where grants
        matter) the caller's grant on it. No row found: one row of NULLs (the revision)."""
        r = self.tables.resource(kind)
        cols: list[Any] = [
            c if c is not None else literal(None)
            for c in (r.id, r.workspace, r.visibility, r.creator, r.parent)
        ]
        named = r.id == bindparam("id") if one else self._any_id(r.id)
        joined: Any = revision.outerjoin(r.table, and_(named, r.of_kind()))
        if with_caller:
            m = self.tables.memberships
            on = and_(m.user == bindparam("user"), m.workspace == r.workspace)
            joined = joined.outerjoin(m.table, on)
            held = self._held(kind, r.id) if r.visibility is not None else None
            cols += [m.role, _or_active(m.status), held if held is not None else literal(None)]
        return select(revision.c.revision, *cols).select_from(joined).where(revision.c.id == 1)


def _or_active(status: Any) -> Any:
    return status if status is not None else literal("active")


def _membership(user: str, workspace: str, role: Any, status: Any) -> Membership | None:
    if role is None:
        return None
    return Membership(
        user=user,
        workspace=workspace,
        role=canonical(str(role)),
        status=canonical(str(status if status is not None else "active")),
    )


def _resource(
    kind: str, id: str, workspace: Any, visibility: Any, creator: Any, parent: Any
) -> Resource:
    """The typed helper for IllumiChat's kinds where the row fills it, else a generic one."""
    vis = None if visibility is None else canonical(str(visibility))
    ws, by = str(workspace), None if creator is None else str(creator)
    if kind == "assistant" and vis is not None and by is not None:
        return Assistant(id=id, workspace=ws, visibility=vis, creator=by)
    if kind == "chat" and parent is not None and by is not None:
        return Chat(id=id, workspace=ws, assistant=str(parent), creator=by)
    return Resource(kind=canonical(kind), id=id, workspace=ws, visibility=vis, creator=by)
