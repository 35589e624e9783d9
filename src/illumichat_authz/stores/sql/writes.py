"""Writes of facts: each one transaction that also bumps the revision, logs the change and
notifies every instance (``pg_notify``), so that no cache anywhere keeps serving the old
fact past the staleness bound, and most drop it within a millisecond.

A host that writes its own mapped tables itself gives that SQL its own trigger
(``illumichat-authz db trigger-sql``, docs/fleet.md) doing the same three steps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ...facts import Chat, Grant, Membership, Resource
from .engine import is_postgres
from .schema import NOTIFY_CHANNEL, FactsTables, change_log, revision

__all__ = [
    "MAX_NOTIFY_BYTES",
    "Fact",
    "FactsWriter",
    "bump_revision",
    "fact_key",
    "log_changes",
    "prune_change_log",
]

Fact = Membership | Resource | Grant
#: PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; a bigger change is announced
#: by its revision alone and listeners read its keys from the change log.
MAX_NOTIFY_BYTES = 7900


def fact_key(fact: Fact) -> tuple[str, ...]:
    """The cache key a fact lives under: what a listener evicts when it changes."""
    if isinstance(fact, Membership):
        return ("membership", fact.user, fact.workspace)
    if isinstance(fact, Resource):
        return ("resource", fact.kind, fact.id)
    return ("grant", fact.user, fact.kind, fact.id)


class FactsWriter:
    """Upserts and removals of memberships, resources and grants, one transaction each."""

    def __init__(
        self, engine: Engine, tables: FactsTables, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self.tables = tables
        self.clock = clock
        self._insert: Any = postgresql.insert if is_postgres(engine) else sqlite.insert

    def apply(self, *, upsert: Iterable[Fact] = (), remove: Iterable[Fact] = ()) -> int:
        """Write ``upsert`` and delete what ``remove`` names; the new revision."""
        upserts, removals = list(upsert), list(remove)
        with self.engine.begin() as conn:
            rev = bump_revision(conn)
            for fact in upserts:
                self._upsert(conn, fact)
            for fact in removals:
                self._remove(conn, fact)
            keys = sorted({fact_key(f) for f in (*upserts, *removals)})
            removed = {fact_key(f) for f in removals}  # applied last: these are gone
            log_changes(conn, rev, keys, self.clock(), removed=removed)
        return rev

    def _upsert(self, conn: Connection, fact: Fact) -> None:
        if isinstance(fact, Membership):
            m = self.tables.memberships
            values: dict[Any, Any] = {
                m.user: fact.user,
                m.workspace: fact.workspace,
                m.role: fact.role,
            }
            if m.status is not None:
                values[m.status] = fact.status
            self._put(conn, m.table, values, (m.user, m.workspace))
        elif isinstance(fact, Resource):
            r = self.tables.resource(fact.kind)
            values = {r.id: fact.id, r.workspace: fact.workspace}
            if r.kind_column is not None:
                values[r.kind_column] = fact.kind
            for column, value in (
                (r.visibility, fact.visibility),
                (r.creator, fact.creator),
                (r.parent, fact.assistant if isinstance(fact, Chat) else None),
            ):
                if column is not None:
                    values[column] = value
            keys = (r.id,) if r.kind_column is None else (r.kind_column, r.id)
            self._put(conn, r.table, values, keys)
        else:
            g = self.tables.grant(fact.kind)
            values = {g.user: fact.user, g.id: fact.id}
            if g.kind_column is not None:
                values[g.kind_column] = fact.kind
            self._put(conn, g.table, values, tuple(values))

    def _put(
        self, conn: Connection, table: Any, values: dict[Any, Any], keys: Sequence[Any]
    ) -> None:
        row = {c.name: v for c, v in values.items()}
        stmt = self._insert(table).values(row)
        rest = {c.name: stmt.excluded[c.name] for c in values if c not in keys}
        names = [c.name for c in keys]
        stmt = (
            stmt.on_conflict_do_update(index_elements=names, set_=rest)
            if rest
            else stmt.on_conflict_do_nothing(index_elements=names)
        )
        conn.execute(stmt)

    def _remove(self, conn: Connection, fact: Fact) -> None:
        if isinstance(fact, Membership):
            m = self.tables.memberships
            where = (m.user == fact.user) & (m.workspace == fact.workspace)
            table = m.table
        elif isinstance(fact, Resource):
            r = self.tables.resource(fact.kind)
            where = (r.id == fact.id) & r.of_kind()
            table = r.table
        else:
            g = self.tables.grant(fact.kind)
            where = (g.user == fact.user) & (g.id == fact.id) & g.of_kind()
            table = g.table
        conn.execute(delete(table).where(where))  # type: ignore[arg-type]


def bump_revision(conn: Connection) -> int:
    """The next revision. The first statement of every write: the row lock on the revision
    serialises writers (and under SQLite takes the write lock before anything is read)."""
    return int(
        conn.execute(
            update(revision)
            .where(revision.c.id == 1)
            .values(revision=revision.c.revision + 1)
            .returning(revision.c.revision)
        ).scalar_one()
    )


def log_changes(
    conn: Connection,
    rev: int,
    keys: Sequence[tuple[str, ...]],
    now: float,
    *,
    removed: Collection[tuple[str, ...]] = (),
) -> None:
    """The change-log row and the notification of revision ``rev`` (in its transaction).

    The notification also says which of ``keys`` were deleted (``"d"``: their positions):
    a listener then knows the answer (absent) without reading it again, so a revocation is
    refused as soon as it arrives. The change log keeps the keys alone: catching up from
    it evicts, which is always safe."""
    encoded = json.dumps([list(k) for k in keys], separators=(",", ":"))
    conn.execute(change_log.insert().values(revision=rev, changed_at=now, keys=encoded))
    if conn.dialect.name == "postgresql":
        message: dict[str, Any] = {"r": rev, "k": json.loads(encoded)}
        gone = [i for i, key in enumerate(keys) if key in removed]
        if gone:
            message["d"] = gone
        payload = json.dumps(message, separators=(",", ":"))
        if len(payload.encode()) > MAX_NOTIFY_BYTES:
            payload = json.dumps({"r": rev})
        conn.execute(select(func.pg_notify(NOTIFY_CHANNEL, payload)))


def current_revision(conn: Connection) -> int:
    return int(conn.execute(select(revision.c.revision).where(revision.c.id == 1)).scalar_one())


def prune_change_log(engine: Engine, *, older_than_s: float, now: float | None = None) -> int:
    """Delete change-log rows older than ``older_than_s``; how many went.

    The newest row always stays. An instance whose feed was away for longer than the
    retention finds its next revision missing and starts its cache over (a reset, logged),
    instead of catching up: keep the log longer than any outage you want to ride out.
    """
    cutoff = (time.time() if now is None else now) - older_than_s
    newest = select(func.max(change_log.c.revision)).scalar_subquery()
    with engine.begin() as conn:
        gone = conn.execute(
            delete(change_log)
            .where(change_log.c.changed_at < cutoff)
            .where(change_log.c.revision < newest)
        )
    return int(gone.rowcount or 0)
