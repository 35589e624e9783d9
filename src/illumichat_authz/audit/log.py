"""The decision log: every deny, and allows as configured, written off the request path.

At the call site (:meth:`DecisionLog.record`) a decision costs a comparison when it is
not logged, and an append to a bounded queue when it is: no formatting, no I/O, no lock.
One writer thread per process drains every log's queue in batches, builds the events
(``audit.events``: allow-listed fields, scrubbed) and hands them to the sinks. A full
queue drops the decision's event and counts it (``stats``), and a sink that fails is
counted and logged; neither ever blocks or changes a decision.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..decision import Decision
from ..request import RequestFacts
from .events import DecisionEvent, EventBuilder

__all__ = ["DecisionLog", "DecisionLogStats", "Sink"]

_log = logging.getLogger("illumichat_authz.audit")

#: How long the writer sleeps between two drains.
FLUSH_INTERVAL_S = 0.05
#: Events per batch handed to a sink.
BATCH = 5000


class Sink(Protocol):
    """Where events go: ``write`` a batch (from the writer thread), ``close`` at the end."""

    def write(self, events: Sequence[DecisionEvent]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DecisionLogStats:
    #: Events handed to every sink.
    written: int
    #: Decisions whose event was dropped because the queue was full.
    dropped: int
    #: Batches a sink failed to write (the events are lost for that sink).
    sink_errors: int
    #: Events waiting in the queue.
    queued: int


#: (decision, request, perf_counter_ns when it started, ... when it was decided, trace id)
_Entry = tuple[Decision, RequestFacts | None, int, int, str | None]


class DecisionLog:
    """``record`` decisions; ``flush`` waits until they are written; ``close`` at exit.

    ``allows``: ``0.0`` logs no allow (only denies), ``1.0`` every allow, a fraction in
    between a random sample of them. ``queue_size`` bounds the memory held by events not
    yet written.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        allows: float = 0.0,
        queue_size: int = 100_000,
        policy_revision: str | None = None,
    ) -> None:
        if not 0.0 <= allows <= 1.0:
            raise ValueError("allows must be between 0 and 1")
        self.sinks = list(sinks)
        self.allows = allows
        self.policy_revision = policy_revision
        self._builder = EventBuilder(policy_revision)
        self._queue: collections.deque[_Entry] = collections.deque()
        self._max = queue_size
        self._random = random.Random()  # noqa: S311 - sampling, not a secret
        self.written = 0
        self.dropped = 0
        self.sink_errors = 0
        self._reported_drops = 0
        #: The current trace's id, read on the deciding thread (``telemetry.otel``), or
        #: ``None``: the request's ``traceparent`` header is used.
        self.trace_ids: Callable[[], str | None] | None = None
        self._drain_lock = threading.Lock()
        self._closed = False
        _WRITER.add(self)

    # --- the call site --------------------------------------------------------------
    def record(self, decision: Decision, request: RequestFacts | None, started_ns: int) -> None:
        """Queue ``decision``'s event (a deny always; an allow as ``allows`` says)."""
        if decision.status == 200:
            rate = self.allows
            if rate == 0.0 or (rate < 1.0 and self._random.random() >= rate):
                return
        queue = self._queue
        if len(queue) >= self._max:
            self.dropped += 1  # bounded: the decision is not delayed, its event is lost
            return
        # No wall clock here: the writer turns this monotonic time into one (see drain).
        trace = self.trace_ids() if self.trace_ids is not None else None
        queue.append((decision, request, started_ns, time.perf_counter_ns(), trace))

    # --- the writer -----------------------------------------------------------------
    def drain(self) -> int:
        """Write what is queued now (the writer thread calls it; so do ``flush``, tests)."""
        with self._drain_lock:
            done = 0
            queue = self._queue
            build = self._builder.build
            while queue:
                # The wall clock of a monotonic time, read now: off by the clock's drift
                # since the decision (at most a drain interval), never by a step backwards.
                offset = time.time_ns() - time.perf_counter_ns()
                entries = [queue.popleft() for _ in range(min(BATCH, len(queue)))]
                noise = os.urandom(10 * len(entries)).hex()
                batch: list[DecisionEvent] = [
                    build(
                        decision,
                        request,
                        # 48 bits of milliseconds, then 80 random: unique, and in time order.
                        decision_id=f"{(ended + offset) // 1_000_000:012x}"
                        + noise[20 * i : 20 * i + 20],
                        at_ns=ended + offset,
                        latency_ns=ended - started,
                        trace_id=trace,
                    )
                    for i, (decision, request, started, ended, trace) in enumerate(entries)
                ]
                for sink in self.sinks:
                    try:
                        sink.write(batch)
                    except Exception as exc:  # a sink's failure is counted, never raised
                        self.sink_errors += 1
                        _log.warning(
                            "decision log sink %s failed: %s",
                            type(sink).__name__,
                            type(exc).__name__,
                        )
                self.written += len(batch)
                done += len(batch)
            if self.dropped > self._reported_drops:
                _log.warning(
                    "decision log queue full: %d events dropped (%d in all)",
                    self.dropped - self._reported_drops,
                    self.dropped,
                )
                self._reported_drops = self.dropped
            return done

    def flush(self) -> None:
        """Write everything recorded so far before returning."""
        self.drain()

    def stats(self) -> DecisionLogStats:
        return DecisionLogStats(
            written=self.written,
            dropped=self.dropped,
            sink_errors=self.sink_errors,
            queued=len(self._queue),
        )

    def close(self) -> None:
        """Write what is left and close the sinks."""
        if self._closed:
            return
        self._closed = True
        _WRITER.discard(self)
        self.drain()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                _log.warning("decision log sink %s did not close: %s", type(sink).__name__, exc)


class _Writer:
    """The one thread per process that drains every open decision log."""

    def __init__(self) -> None:
        self._logs: weakref.WeakSet[DecisionLog] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, log: DecisionLog) -> None:
        with self._lock:
            self._logs.add(log)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="illumichat-authz-decision-log", daemon=True
                )
                self._thread.start()

    def discard(self, log: DecisionLog) -> None:
        with self._lock:
            self._logs.discard(log)

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            with self._lock:
                logs: list[Any] = list(self._logs)
            for log in logs:
                try:
                    log.drain()
                except Exception:  # never let the writer die: the next tick tries again
                    _log.exception("decision log writer failed")


_WRITER = _Writer()
