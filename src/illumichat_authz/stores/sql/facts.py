"""Facts read from SQL, cached in process, each entry stamped with the revision it was read at.

The warm path is a dict lookup and a clock compare: an entry is served while the change
feed (``stores.sql.feed``) has confirmed the cache current within ``max_staleness_s``.
Past that bound (the database unreachable, the feed stopped) nothing cached is served:
every lookup goes to the database, and a lookup that fails there is the decision's 503,
never an allow from memory. A miss reads the fact and the revision in one statement; the
entry is kept only if no change newer than that revision has been applied meanwhile (the
feed evicts under the same lock), so an eviction can never be overtaken by a stale read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Engine, Select, and_, exists, literal, select

from ...facts import Assistant, Chat, Membership, Resource
from ...vocab import canonical
from .engine import reader
from .schema import FactsTables, revision

__all__ = ["SqlFacts"]

_Key = tuple[str, ...]


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
    ) -> None:
        self.engine = reader(engine)
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
        self._statements: dict[Any, Select[Any]] = {}

    # --- the lookups (the core calls these) ----------------------------------------------
    def membership(self, user: str, workspace: str) -> Membership | None:
        hit = self._memberships.get((user, workspace))
        if hit is not None and self.clock() < self.fresh_until:
            return hit[0]
        value, rev = self._read_membership(user, workspace)
        self._keep(self._memberships, (user, workspace), value, rev)
        return value

    def resource(self, kind: str, id: str) -> Resource | None:
        hit = self._resources.get((kind, id))
        if hit is not None and self.clock() < self.fresh_until:
            return hit[0]
        value, rev = self._read_resource(kind, id)
        self._keep(self._resources, (kind, id), value, rev)
        return value

    def has_grant(self, user: str, kind: str, id: str) -> bool:
        hit = self._grants.get((user, kind, id))
        if hit is not None and self.clock() < self.fresh_until:
            return hit[0]
        value, rev = self._read_grant(user, kind, id)
        self._keep(self._grants, (user, kind, id), value, rev)
        return value

    # --- what the feed calls ----------------------------------------------------------------
    def confirm(self, rev: int) -> None:
        """The database is at ``rev`` and every change up to it is applied: fresh again."""
        if rev == self.applied:
            self.fresh_until = self.clock() + self.max_staleness_s

    def apply(self, rev: int, keys: Iterable[_Key] | None) -> None:
        """Change ``rev`` touched ``keys`` (``None``: unknown, drop everything)."""
        with self._lock:
            if keys is None:
                self._clear()
            else:
                for key in keys:
                    self._evict(key, rev)
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
    def _clear(self) -> None:
        self._memberships.clear()
        self._resources.clear()
        self._grants.clear()

    def _evict(self, key: _Key, rev: int) -> None:
        fact, *rest = key
        tables: dict[str, dict[Any, tuple[Any, int]]] = {
            "membership": self._memberships,
            "resource": self._resources,
            "grant": self._grants,
        }
        table = tables.get(fact)
        if table is None:  # a key of a newer release: be safe
            self._clear()
            return
        entry = table.get(tuple(rest))
        if entry is not None and entry[1] < rev:
            del table[tuple(rest)]

    def _keep(self, table: dict[Any, tuple[Any, int]], key: Any, value: Any, rev: int) -> None:
        with self._lock:
            # Read before a change the feed has already applied: that change may be this
            # very key's, and its eviction is past. Serve the value, do not keep it.
            if rev < self.applied:
                return
            if self.entries >= self.max_entries:
                self._clear()  # bounded: a full cache starts over (entries refill on use)
            table[key] = (value, rev)

    def _statement(self, name: Any, build: Callable[[], Select[Any]]) -> Select[Any]:
        stmt = self._statements.get(name)
        if stmt is None:
            stmt = self._statements[name] = build()
        return stmt

    def _read(self, stmt: Select[Any], params: dict[str, str]) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(stmt, params).one()

    def _read_membership(self, user: str, workspace: str) -> tuple[Membership | None, int]:
        m = self.tables.memberships

        def build() -> Select[Any]:
            on = and_(m.user == _param("user"), m.workspace == _param("workspace"))
            status = m.status if m.status is not None else literal("active")
            return (
                select(revision.c.revision, m.role, status)
                .select_from(revision.outerjoin(m.table, on))
                .where(revision.c.id == 1)
            )

        row = self._read(
            self._statement("membership", build), {"user": user, "workspace": workspace}
        )
        rev, role, status = row
        if role is None:
            return None, int(rev)
        member = Membership(
            user=user,
            workspace=workspace,
            role=canonical(str(role)),
            status=canonical(str(status if status is not None else "active")),
        )
        return member, int(rev)

    def _read_resource(self, kind: str, id: str) -> tuple[Resource | None, int]:
        r = self.tables.resource(kind)

        def build() -> Select[Any]:
            on = and_(r.id == _param("id"), r.of_kind())
            cols = [
                c if c is not None else literal(None)
                for c in (r.id, r.workspace, r.visibility, r.creator, r.parent)
            ]
            return (
                select(revision.c.revision, *cols)
                .select_from(revision.outerjoin(r.table, on))
                .where(revision.c.id == 1)
            )

        row = self._read(self._statement(("resource", kind), build), {"id": id})
        rev, found, workspace, visibility, creator, parent = row
        if found is None:
            return None, int(rev)
        return _resource(kind, id, workspace, visibility, creator, parent), int(rev)

    def _read_grant(self, user: str, kind: str, id: str) -> tuple[bool, int]:
        g = self.tables.grant(kind)

        def build() -> Select[Any]:
            held = exists().where(g.user == _param("user"), g.id == _param("id"), g.of_kind())
            return select(revision.c.revision, held).where(revision.c.id == 1)

        rev, held = self._read(self._statement(("grant", kind), build), {"user": user, "id": id})
        return bool(held), int(rev)


def _param(name: str) -> Any:
    from sqlalchemy import bindparam

    return bindparam(name)


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
