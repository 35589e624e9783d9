"""Metrics, traces and health for a fleet (docs/observability.md).

``counts`` is what runs per decision (plain Python, always importable); the exporters
sit behind extras and are imported only when configured: ``prometheus`` (the ``metrics``
extra: a collector a host registers, and ``serve``'s ``/metrics``) and ``otel`` (the
``otel`` extra: a span per decision with ``authz.*`` attributes). ``[telemetry]`` in the
settings turns them on for ``Authorizer.from_settings``.
"""

from __future__ import annotations

from .counts import DecisionMetrics, Histogram, MetricsSnapshot, decision_metrics

__all__ = ["DecisionMetrics", "Histogram", "MetricsSnapshot", "decision_metrics"]
