"""What telemetry costs per decision, against the naive alternative, in one run.

    .venv/bin/python benchmarks/bench_telemetry.py [--quick]

Each row is the observer's ``record`` alone (what a decision pays after deciding), timed
in batches, the rows interleaved round by round:

- ``DecisionMetrics.record`` (ours: a tuple appended, folded in batches) against the
  naive one, prometheus-client's ``Counter.labels(status, reason).inc()`` plus
  ``Histogram.observe`` per decision;
- ``DecisionSpans.record`` with an SDK tracer recording (a no-op exporter), with the
  trace unsampled, and with no SDK at all (the API's no-op tracer);
- ``Authorizer.decide`` of one cached allow, bare and with metrics installed;
- one scrape (``exposition``) of the collector.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _timing import batch_us, gc_off  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF  # noqa: E402
from prometheus_client import CollectorRegistry, Counter  # noqa: E402
from prometheus_client import Histogram as PromHistogram  # noqa: E402

from illumichat_authz import Authorizer, RequestFacts  # noqa: E402
from illumichat_authz.facts import Assistant, InMemoryFacts, Membership  # noqa: E402
from illumichat_authz.telemetry.counts import DECISION_BUCKETS_S, DecisionMetrics  # noqa: E402
from illumichat_authz.telemetry.otel import DecisionSpans  # noqa: E402
from illumichat_authz.telemetry.prometheus import exposition, registry_for  # noqa: E402
from illumichat_authz.testing import make_test_settings  # noqa: E402
from illumichat_authz.testing.fixtures import (  # noqa: E402
    DEV_SESSION_SECRET,
    WORKSPACE_CLAIM,
    _core_for,
)
from illumichat_authz.testing.minting import session_cookie  # noqa: E402


class Nowhere(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def naive_metrics() -> Callable[[int, str, int], None]:
    registry = CollectorRegistry()
    decisions = Counter("d", "d", ["status", "reason"], registry=registry)
    latency = PromHistogram("l", "l", buckets=DECISION_BUCKETS_S, registry=registry)

    def record(status: int, reason: str, ns: int) -> None:
        decisions.labels(str(status), reason).inc()
        latency.observe(ns / 1e9)

    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    rounds = 300 if parser.parse_args().quick else 2000
    inner = 50
    facts = InMemoryFacts()
    facts.add(
        Membership(user="alice", workspace="w1", role="member"),
        Assistant(id="a1", workspace="w1", visibility="workspace", creator="alice"),
    )
    core = _core_for(make_test_settings())
    bare = Authorizer(core=core, facts=facts)
    counted = Authorizer(core=core, facts=facts)
    counted.observe(DecisionMetrics())
    cookie = session_cookie(
        "alice", secret=DEV_SESSION_SECRET, workspace="w1", workspace_claim=WORKSPACE_CLAIM
    )
    request = RequestFacts(
        method="GET", path="/api/assistants/a1", headers=(("cookie", str(cookie)),)
    )
    decision = bare.decide(request)
    assert decision.status == 200, decision
    metrics = DecisionMetrics()
    naive = naive_metrics()
    recording = TracerProvider()
    recording.add_span_processor(SimpleSpanProcessor(Nowhere()))
    spans = DecisionSpans(tracer_provider=recording)
    unsampled = DecisionSpans(tracer_provider=TracerProvider(sampler=ALWAYS_OFF))
    noop = DecisionSpans()  # no SDK configured: the API's no-op tracer
    started = time.perf_counter_ns()
    registry = registry_for(counted)
    rows: dict[str, Callable[[], object]] = {
        "DecisionMetrics.record (ours)": lambda: metrics.record(decision, request, started),
        "prometheus-client Counter.labels().inc() + Histogram.observe (naive)": lambda: naive(
            decision.status, str(decision.reason), 1234
        ),
        "DecisionSpans.record, SDK recording": lambda: spans.record(decision, request, started),
        "DecisionSpans.record, unsampled": lambda: unsampled.record(decision, request, started),
        "DecisionSpans.record, no SDK (API no-op)": lambda: noop.record(decision, request, started),
        "Authorizer.decide, cached allow, bare": lambda: bare.decide(request),
        "Authorizer.decide, cached allow, metrics on": lambda: counted.decide(request),
    }
    samples: dict[str, list[float]] = {name: [] for name in rows}
    with gc_off():
        for _ in range(rounds):
            for name, fn in rows.items():
                samples[name].append(batch_us(fn, inner))
    print(f"{rounds} rounds of {inner} calls; Python {sys.version.split()[0]}")
    print("| per call | median | p99 of batch means |")
    print("|---|---|---|")
    med = {}
    for name, values in samples.items():
        values.sort()
        med[name] = statistics.median(values)
        print(f"| {name} | {med[name]:.3f} µs | {values[int(0.99 * len(values))]:.3f} µs |")
    ours, theirs = (
        med["DecisionMetrics.record (ours)"],
        med["prometheus-client Counter.labels().inc() + Histogram.observe (naive)"],
    )
    print(f"naive / ours: {theirs / ours:.2f}x")
    added = (
        med["Authorizer.decide, cached allow, metrics on"]
        - med["Authorizer.decide, cached allow, bare"]
    )
    print(f"metrics on a decision: +{added:.3f} µs")
    scrape = [batch_us(lambda: exposition(registry), 1) for _ in range(200)]
    print(f"one scrape of the collector: {statistics.median(scrape):.0f} µs median")


if __name__ == "__main__":
    main()
