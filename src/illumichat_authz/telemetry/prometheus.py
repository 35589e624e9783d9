"""Prometheus metrics for one :class:`~illumichat_authz.Authorizer` (the ``metrics`` extra).

A collector, not a set of live ``Counter`` objects: the deciding thread only counts into
plain Python (``telemetry.counts``) and the numbers the stores already keep (cache hits,
feed status, decision log stats, JWKS fetches) are read when Prometheus scrapes. So a
metric costs nothing per request beyond the decision count, and there is one source for
each number: what ``/readyz`` and ``policy status`` report is what is exported.

A host registers it on its own registry::

    from prometheus_client import REGISTRY
    from illumichat_authz.telemetry.prometheus import AuthzCollector

    REGISTRY.register(AuthzCollector(authorizer))

``serve`` does this on a registry of its own and serves it at ``/metrics`` when
``[telemetry] metrics = true``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from ..reasons import Reason
from .counts import Histogram, decision_metrics

if TYPE_CHECKING:
    from ..authorizer import Authorizer

__all__ = ["CONTENT_TYPE_LATEST", "PREFIX", "AuthzCollector", "exposition", "registry_for"]

PREFIX = "illumichat_authz"


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name,
        doc,
        buckets=[(le, float(n)) for le, n in hist.cumulative()],
        sum_value=hist.sum_ns / 1e9,
    )


class AuthzCollector(Collector):
    """Every metric of ``authorizer``, read at each scrape.

    Installs a :class:`~illumichat_authz.telemetry.counts.DecisionMetrics` observer on
    the authorizer if none watches it yet (``[telemetry] metrics`` installs one at start,
    so decisions made before the collector existed are counted too)."""

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer
        self.metrics = decision_metrics(authorizer)

    def collect(self) -> Iterator[Metric]:
        yield from self._decisions()
        yield from self._caches()
        yield from self._facts()
        yield from self._jwks()
        yield from self._decision_log()
        yield from self._policy()

    def _decisions(self) -> Iterator[Metric]:
        snap = self.metrics.snapshot()
        decisions = CounterMetricFamily(
            f"{PREFIX}_decisions",
            "Decisions made, by HTTP status and reason code.",
            labels=["status", "reason"],
        )
        limited = 0
        for (status, reason), n in sorted(snap.decisions.items()):
            decisions.add_metric([str(status), reason], n)
            if reason == Reason.RATE_LIMITED:
                limited += n
        yield decisions
        yield CounterMetricFamily(
            f"{PREFIX}_rate_limit_rejections",
            "Requests refused with 429 because a rate limit was reached.",
            value=limited,
        )
        yield _histogram(f"{PREFIX}_decision_seconds", "Time to decide one request.", snap.latency)

    def _caches(self) -> Iterator[Metric]:
        lookups = CounterMetricFamily(
            f"{PREFIX}_cache_lookups",
            "Cache lookups by cache and result: facts (a miss is a fact read from the "
            "database) and verified credentials.",
            labels=["cache", "result"],
        )
        # Facts over a database (``SqlFacts``) count their cache; in-memory facts have none.
        facts: Any = self.authorizer.facts
        sql = hasattr(facts, "fetch_latency")
        if sql:
            lookups.add_metric(["facts", "hit"], facts.hits)
            lookups.add_metric(["facts", "miss"], facts.fetched)
        cache = self.authorizer.credential_cache
        lookups.add_metric(["credentials", "hit"], cache.hits)
        lookups.add_metric(["credentials", "miss"], cache.misses)
        yield lookups
        if sql:
            yield _histogram(
                f"{PREFIX}_facts_fetch_seconds",
                "Time of one facts round trip to the database (a cache miss).",
                facts.fetch_latency.copy(),
            )

    def _facts(self) -> Iterator[Metric]:
        database = self.authorizer.database
        if database is None:
            return
        feed = database.feed.status()
        yield GaugeMetricFamily(
            f"{PREFIX}_facts_revision",
            "The facts revision this instance has applied.",
            value=feed.applied,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_facts_database_revision",
            "The database's revision at the change feed's last check.",
            value=feed.database,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_facts_lag_seconds",
            "Seconds since the change feed last confirmed the cache current (+Inf: never).",
            value=feed.age_s if feed.age_s != float("inf") else math.inf,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_facts_listening",
            "1 while change notifications are being received (PostgreSQL LISTEN).",
            value=1 if feed.listening else 0,
        )

    def _jwks(self) -> Iterator[Metric]:
        jwks = self.authorizer.jwks
        if jwks is None:
            return
        fetches = CounterMetricFamily(
            f"{PREFIX}_jwks_fetches", "JWKS fetches by result.", labels=["result"]
        )
        failed = jwks.fetch_failures
        fetches.add_metric(["ok"], jwks.fetches - failed)
        fetches.add_metric(["error"], failed)
        yield fetches

    def _decision_log(self) -> Iterator[Metric]:
        log = self.authorizer.decision_log
        if log is None:
            return
        stats = log.stats()
        events = CounterMetricFamily(
            f"{PREFIX}_decision_log_events",
            "Decision log events: written to every sink, or dropped (queue full).",
            labels=["outcome"],
        )
        events.add_metric(["written"], stats.written)
        events.add_metric(["dropped"], stats.dropped)
        yield events
        yield CounterMetricFamily(
            f"{PREFIX}_decision_log_sink_errors",
            "Batches a decision log sink failed to write.",
            value=stats.sink_errors,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_decision_log_queued", "Events waiting to be written.", value=stats.queued
        )

    def _policy(self) -> Iterator[Metric]:
        rollout = self.authorizer.rollout
        info = GaugeMetricFamily(
            f"{PREFIX}_policy_info",
            "The live policy: its revision (files digest) and database version.",
            labels=["revision", "version"],
        )
        if rollout is None:
            info.add_metric([self.authorizer.core.policy_revision or "", ""], 1)
            yield info
            return
        status = rollout.status()
        version = "" if status.version is None else str(status.version)
        info.add_metric([status.revision, version], 1)
        yield info
        yield GaugeMetricFamily(
            f"{PREFIX}_policy_refused",
            "1 while the last candidate policy was refused and the previous one serves.",
            value=1 if status.refused is not None else 0,
        )
        if status.shadow:
            shadow = CounterMetricFamily(
                f"{PREFIX}_shadow_requests",
                "Shadow policy: requests compared, differing, skipped or dropped.",
                labels=["outcome"],
            )
            for outcome, n in sorted(status.shadow.items()):
                shadow.add_metric([outcome], n)
            yield shadow


def registry_for(authorizer: Authorizer) -> CollectorRegistry:
    """A registry holding only ``authorizer``'s metrics (``serve``'s ``/metrics``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AuthzCollector(authorizer))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The text format Prometheus scrapes (``CONTENT_TYPE_LATEST``)."""
    return generate_latest(registry)
