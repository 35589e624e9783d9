"""The decision log in SQL: a sink that writes batches, and the reader behind ``audit tail``.

On PostgreSQL a batch is one ``COPY`` (tens of thousands of rows a second from one writer
thread); on SQLite one ``executemany``. Either way one transaction per batch, on a
connection of the engine's pool, from the decision log's writer thread: never on a
request's path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, insert, select

from ...audit.events import FIELDS, DecisionEvent
from .engine import is_postgres
from .schema import decision_log

__all__ = ["SqlDecisionSink", "read_events"]

_COPY = f"COPY authz_decision_log ({', '.join(FIELDS)}) FROM STDIN"


class SqlDecisionSink:
    """``audit.Sink`` writing to ``authz_decision_log`` (``db upgrade`` creates it)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(self, events: Sequence[DecisionEvent]) -> None:
        if not events:
            return
        if is_postgres(self.engine):
            raw = self.engine.raw_connection()
            try:
                driver: Any = raw.driver_connection
                with driver.cursor() as cursor, cursor.copy(_COPY) as copy:
                    for event in events:
                        copy.write_row(event)
                raw.commit()
            except BaseException:
                raw.invalidate()
                raise
            finally:
                raw.close()
            return
        with self.engine.begin() as conn:
            conn.execute(insert(decision_log), [e.as_dict() for e in events])

    def close(self) -> None:
        pass


def read_events(
    engine: Engine,
    *,
    principal: str | None = None,
    route: str | None = None,
    reason: str | None = None,
    status: int | None = None,
    since: str | None = None,
    until: str | None = None,
    after: str | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """The newest ``limit`` events matching every filter given, oldest first.

    ``since``/``until``: RFC 3339 UTC times (``2026-12-03T10:00:00Z``), compared as the
    table's text. ``after``: only events at that time or newer (``audit tail --follow``,
    which skips the ones it has printed)."""
    t = decision_log.c
    query = select(decision_log)
    for column, value in (
        (t.principal, principal),
        (t.route, route),
        (t.reason, reason),
        (t.status, status),
    ):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(t.time >= since)
    if until is not None:
        query = query.where(t.time <= until)
    if after is not None:
        query = query.where(t.time >= after)
    query = query.order_by(t.time.desc(), t.decision_id.desc()).limit(limit)
    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
    rows.reverse()
    return rows
