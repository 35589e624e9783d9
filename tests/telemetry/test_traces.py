"""OpenTelemetry: one span per decision, a child of the host's span, with the ``authz.*``
attributes and no credential; the decision log carries the trace's id."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import StatusCode

from illumichat_authz import Authorizer, RequestFacts
from illumichat_authz.audit import DecisionEvent, DecisionLog
from illumichat_authz.telemetry.otel import SPAN_NAME, DecisionSpans, current_trace_id

HEADER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_a_span_per_decision_under_the_hosts_span(
    authorizer: Authorizer,
    mint_session: Callable[..., Any],
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = traced
    authorizer.observe(DecisionSpans(tracer_provider=provider))
    cookie = str(mint_session("alice", workspace="w1"))
    host = provider.get_tracer("host")
    with host.start_as_current_span("GET /api/assistants/{id}") as parent:
        allowed = authorizer.decide(
            RequestFacts(method="GET", path="/api/assistants/a1", headers=(("cookie", cookie),))
        )
        denied = authorizer.decide(
            RequestFacts(method="GET", path="/api/assistants/hidden", headers=(("cookie", cookie),))
        )
    assert (allowed.status, denied.status) == (200, 403)
    decided = [s for s in exporter.get_finished_spans() if s.name == SPAN_NAME]
    assert len(decided) == 2
    host_span = next(s for s in exporter.get_finished_spans() if s.name != SPAN_NAME)
    for span, decision in zip(decided, (allowed, denied), strict=True):
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.context.trace_id == parent.get_span_context().trace_id
        assert span.start_time is not None and span.end_time is not None  # noqa: PT018
        assert host_span.start_time <= span.start_time <= span.end_time  # type: ignore[operator]
        assert span.end_time <= host_span.end_time  # type: ignore[operator]
        attributes = dict(span.attributes or {})
        assert attributes == {
            "authz.decision": "allow" if decision.allowed else "deny",
            "authz.status": decision.status,
            "authz.reason": str(decision.reason),
            "authz.route": "GET /api/assistants/{assistantId}",
            "authz.route_class": "authenticated",
            "authz.action": "assistant:read",
            "authz.resource.kind": "assistant",
            "authz.credential": "session",
            "authz.policy_revision": authorizer.core.policy_revision,
        }
        token = cookie.partition("=")[2]
        assert not any(token in str(v) or v == "hidden" for v in attributes.values())
        assert span.status.status_code is StatusCode.UNSET


def test_an_unsampled_trace_records_nothing(
    authorizer: Authorizer, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    _, exporter = traced
    off = TracerProvider(sampler=ALWAYS_OFF)
    off.add_span_processor(SimpleSpanProcessor(exporter))
    authorizer.observe(DecisionSpans(tracer_provider=off))
    decision = authorizer.decide(RequestFacts(method="GET", path="/api/assistants/a1"))
    assert decision.status == 401
    assert exporter.get_finished_spans() == ()


def test_a_decision_that_could_not_be_made_is_a_span_error(
    authorizer: Authorizer,
    mint_session: Callable[..., Any],
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = traced

    class Down:
        def membership(self, user: str, workspace: str) -> Any:
            raise ConnectionError("facts store down")

        resource = has_grant = membership

    authorizer.facts = Down()  # type: ignore[assignment]
    authorizer.observe(DecisionSpans(tracer_provider=provider))
    cookie = str(mint_session("alice", workspace="w1"))
    decision = authorizer.decide(
        RequestFacts(method="GET", path="/api/assistants/a1", headers=(("cookie", cookie),))
    )
    assert decision.status >= 500
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["authz.decision"] == "deny"


def test_the_decision_log_carries_the_current_trace_id(
    authorizer: Authorizer, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, _ = traced
    events: list[DecisionEvent] = []

    class Sink:
        def write(self, batch: Sequence[DecisionEvent]) -> None:
            events.extend(batch)

        def close(self) -> None:
            pass

    log = DecisionLog([Sink()])
    log.trace_ids = current_trace_id
    authorizer.decision_log = log
    header = ("traceparent", f"00-{HEADER_TRACE}-00f067aa0ba902b7-01")
    request = RequestFacts(method="GET", path="/api/assistants/a1", headers=(header,))
    authorizer.decide(request)  # no current span: the header's trace
    with provider.get_tracer("host").start_as_current_span("request") as span:
        authorizer.decide(request)
        trace_id = format(span.get_span_context().trace_id, "032x")
    log.close()
    assert [e.trace_id for e in events] == [HEADER_TRACE, trace_id]
    assert trace_id != HEADER_TRACE
    assert current_trace_id() is None


def test_telemetry_traces_setting_installs_the_spans(tmp_path: Any) -> None:
    (tmp_path / "authz.toml").write_text(
        '[session]\nsecrets = ["a-dev-secret-for-traces"]\n[decision_log]\nsinks = ["logging"]\n'
        "[telemetry]\ntraces = true\n"
    )
    from illumichat_authz import load_settings

    authz = Authorizer.from_settings(load_settings(str(tmp_path / "authz.toml"), environment=False))
    try:
        assert sum(isinstance(o, DecisionSpans) for o in authz.observers) == 1
        assert authz.decision_log is not None
        assert authz.decision_log.trace_ids is current_trace_id
    finally:
        authz.close()
