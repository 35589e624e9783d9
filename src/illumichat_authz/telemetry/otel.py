"""OpenTelemetry spans for decisions (the ``otel`` extra: ``opentelemetry-api``).

A span is made after the decision, from the time it started to the time it ended
(``start_time``/``end_time``), as a child of whatever span is current on the deciding
thread: the host's request span when the host is instrumented. Made afterwards, it costs
nothing while deciding and cannot change the decision; an unsampled trace costs one
non-recording span and no attributes.

Attributes are ours alone, all from the policy's own tables or the decision's numbers:
``authz.decision``, ``authz.status``, ``authz.reason``, ``authz.route`` (the template,
never the path), ``authz.route_class``, ``authz.action``, ``authz.resource.kind``,
``authz.credential``, ``authz.policy_revision``, ``authz.facts_revision``. No
credential, no header, no path parameter and no user id is put on a span.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import __version__
from ..decision import Decision
from ..request import RequestFacts

__all__ = ["SPAN_NAME", "DecisionSpans", "current_trace_id", "span_attributes"]

SPAN_NAME = "authz.decide"


def span_attributes(decision: Decision) -> dict[str, Any]:
    """The ``authz.*`` attributes of ``decision`` (``None`` values left out)."""
    attributes: dict[str, Any] = {
        "authz.decision": "allow" if decision.status == 200 else "deny",
        "authz.status": decision.status,
        "authz.reason": str(decision.reason),
    }
    principal = decision.principal
    resource = decision.resource
    optional = (
        ("authz.route", decision.route),
        ("authz.route_class", decision.route_class),
        ("authz.action", decision.action),
        ("authz.resource.kind", resource.kind if resource is not None else None),
        ("authz.credential", str(principal.kind) if principal is not None else None),
        ("authz.policy_revision", decision.policy_revision),
        ("authz.facts_revision", decision.facts_revision),
    )
    for name, value in optional:
        if value is not None:
            attributes[name] = value
    return attributes


class DecisionSpans:
    """An observer (``Authorizer.observe``) making one span per decision."""

    #: Every decision, not only denies.
    allows = True

    def __init__(self, tracer_provider: Any = None) -> None:
        self._tracer = trace.get_tracer(
            "illumichat_authz", __version__, tracer_provider=tracer_provider
        )

    def record(self, decision: Decision, request: RequestFacts | None, started_ns: int) -> None:
        elapsed = time.perf_counter_ns() - started_ns
        end = time.time_ns()
        span = self._tracer.start_span(SPAN_NAME, kind=SpanKind.INTERNAL, start_time=end - elapsed)
        if span.is_recording():
            span.set_attributes(span_attributes(decision))
            if decision.status >= 500:
                # A deny is the policy working; only a decision that could not be made is
                # an error of the span.
                span.set_status(Status(StatusCode.ERROR, str(decision.reason)))
        span.end(end_time=end)


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits), for the decision log; ``None`` when
    no span is current."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x")
