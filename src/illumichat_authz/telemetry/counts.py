"""Counting decisions on the request path, for the exporters to read at scrape time.

Counting is the part that runs per decision, so it is plain Python and costs a tuple and
a ``deque.append`` (atomic under the GIL: no lock on the deciding thread). The queued
observations are folded into counters and histograms in batches, by the recording thread
once :data:`FOLD_AT` are waiting, and by every reader (a scrape) before it reads. The
exporters (``telemetry.prometheus``) only read :meth:`DecisionMetrics.snapshot`; nothing
here imports them.
"""

from __future__ import annotations

import bisect
import collections
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter_ns
from typing import TYPE_CHECKING

from ..decision import Decision
from ..request import RequestFacts

if TYPE_CHECKING:
    from ..authorizer import Authorizer

__all__ = [
    "DECISION_BUCKETS_S",
    "FETCH_BUCKETS_S",
    "FOLD_AT",
    "DecisionMetrics",
    "Histogram",
    "MetricsSnapshot",
    "decision_metrics",
]

#: Upper bounds, in seconds, of the decision latency buckets: a cached decision takes a
#: few microseconds, one with a database round trip or a Redis hit a few hundred.
DECISION_BUCKETS_S: tuple[float, ...] = (
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0,
)  # fmt: skip
#: Upper bounds of a facts round trip's buckets (PostgreSQL on loopback: ~0.1-1 ms).
FETCH_BUCKETS_S: tuple[float, ...] = (
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.5, 1.0, 5.0,
)  # fmt: skip
#: Observations queued before the recording thread folds them (bounds the memory held
#: between two scrapes, or forever when nothing scrapes).
FOLD_AT = 512


class Histogram:
    """Cumulative-ready bucket counts over fixed bounds (seconds), as Prometheus wants them.

    ``observe_ns`` takes nanoseconds (what ``perf_counter_ns`` gives) so no float is made
    per observation; callers hold their own lock or accept the GIL's word."""

    __slots__ = ("_bounds_ns", "bounds_s", "counts", "sum_ns")

    def __init__(self, bounds_s: Sequence[float]) -> None:
        self.bounds_s = tuple(bounds_s)
        self._bounds_ns = [round(b * 1e9) for b in self.bounds_s]
        #: One count per bound, then the +Inf bucket (not cumulative).
        self.counts = [0] * (len(self.bounds_s) + 1)
        self.sum_ns = 0

    def observe_ns(self, ns: int) -> None:
        self.counts[bisect.bisect_left(self._bounds_ns, ns)] += 1
        self.sum_ns += ns

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count at or below it)`` pairs ending with ``+Inf``."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, n in zip((*map(repr, self.bounds_s), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    def copy(self) -> Histogram:
        twin = Histogram(self.bounds_s)
        twin.counts = list(self.counts)
        twin.sum_ns = self.sum_ns
        return twin


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    #: Decisions by ``(status, reason)``.
    decisions: dict[tuple[int, str], int]
    #: Time from the start of a decision to its end (the observer's call).
    latency: Histogram


class DecisionMetrics:
    """An observer (``Authorizer.observe``) counting every decision, allows included."""

    #: Every decision, not only denies.
    allows = True

    def __init__(self) -> None:
        self._pending: collections.deque[tuple[int, str, int]] = collections.deque()
        self._decisions: dict[tuple[int, str], int] = {}
        self._latency = Histogram(DECISION_BUCKETS_S)
        self._lock = threading.Lock()

    def record(self, decision: Decision, request: RequestFacts | None, started_ns: int) -> None:
        pending = self._pending
        pending.append((decision.status, decision.reason, perf_counter_ns() - started_ns))
        if len(pending) >= FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Move the queued observations into the counters (one folder at a time)."""
        with self._lock:
            pending = self._pending
            decisions = self._decisions
            observe = self._latency.observe_ns
            for _ in range(len(pending)):
                status, reason, ns = pending.popleft()
                key = (status, str(reason))
                decisions[key] = decisions.get(key, 0) + 1
                observe(ns)

    def snapshot(self) -> MetricsSnapshot:
        """Everything counted so far, as a copy the caller may read at leisure."""
        self.fold()
        with self._lock:
            return MetricsSnapshot(dict(self._decisions), self._latency.copy())


def decision_metrics(authorizer: Authorizer) -> DecisionMetrics:
    """The :class:`DecisionMetrics` watching ``authorizer``, installed if there is none:
    one count per authorizer, however many exporters read it."""
    for observer in authorizer.observers:
        if isinstance(observer, DecisionMetrics):
            return observer
    metrics = DecisionMetrics()
    authorizer.observe(metrics)
    return metrics
