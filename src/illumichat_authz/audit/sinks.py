"""Where decision log events go: ``logging``, NDJSON on a stream or in a file.

The PostgreSQL (or SQLite) table is ``stores.sql.decision_log.SqlDecisionSink``. A sink
is called from the writer thread with a batch of events; it may raise (the log counts it)
but must not hold the events (they are already scrubbed, and gone after the call).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from .events import DecisionEvent

__all__ = ["LoggingSink", "NdjsonSink", "event_json"]

#: The logger the ``logging`` sink writes to, at INFO: one JSON object per message.
DECISIONS_LOGGER = "illumichat_authz.decisions"


def event_json(event: DecisionEvent) -> str:
    """One line of NDJSON (ASCII: no locale or terminal can break it)."""
    return json.dumps(event.as_dict(), separators=(",", ":"))


class LoggingSink:
    """Each event as one INFO record of ``illumichat_authz.decisions``; the event's fields
    are also on the record as ``record.authz`` (a dict) for structured handlers."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(DECISIONS_LOGGER)

    def write(self, events: Sequence[DecisionEvent]) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        for event in events:
            logger.info(event_json(event), extra={"authz": event.as_dict()})

    def close(self) -> None:
        pass


class NdjsonSink:
    """NDJSON to a stream (``stdout``) or appended to a file (``file:PATH``)."""

    def __init__(self, target: IO[str] | str | Path) -> None:
        self._owned = isinstance(target, (str, Path))
        if isinstance(target, (str, Path)):
            self._stream: IO[str] = open(target, "a", encoding="ascii")  # noqa: SIM115
        else:
            self._stream = target
        self._lock = threading.Lock()

    @classmethod
    def stdout(cls) -> NdjsonSink:
        return cls(sys.stdout)

    def write(self, events: Sequence[DecisionEvent]) -> None:
        text = "".join(event_json(e) + "\n" for e in events)
        with self._lock:
            self._stream.write(text)
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._owned:
                self._stream.close()
            else:
                self._stream.flush()
