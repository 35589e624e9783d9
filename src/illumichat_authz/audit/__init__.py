"""The decision log (docs/decision-log.md): who was allowed or denied what, and why, as
one structured event per decision, with no secret in it by construction.

``events`` builds an event from a decision (allow-listed fields, scrubbed); ``log`` queues
them at the call site and writes them from one thread; ``sinks`` are ``logging`` and
NDJSON; the SQL table is in ``stores.sql.decision_log``.
"""

from __future__ import annotations

from .events import FIELDS, REDACTED, DecisionEvent, build_event, scrub
from .log import DecisionLog, DecisionLogStats, Sink
from .sinks import LoggingSink, NdjsonSink, event_json

__all__ = [
    "FIELDS",
    "REDACTED",
    "DecisionEvent",
    "DecisionLog",
    "DecisionLogStats",
    "LoggingSink",
    "NdjsonSink",
    "Sink",
    "build_event",
    "event_json",
    "scrub",
]
