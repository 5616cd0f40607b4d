"""An OpenTelemetry SDK for the tests: in-memory spans and metrics.

OpenTelemetry's global tracer and meter providers can be set once per
process, so :func:`providers` sets them once (``tests/conftest.py`` exposes it
as the session fixture behind ``otel``) and each test clears the spans.
Counters are cumulative: tests compare values before and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Otel:
    exporter: Any
    reader: Any

    def spans(self, name: str | None = None) -> list[Any]:
        """Finished spans, oldest first (only those called ``name``, if given)."""
        finished = list(self.exporter.get_finished_spans())
        return [span for span in finished if name is None or span.name == name]

    def metric(self, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
        """The current value of each data point of metric ``name``, by attributes."""
        data = self.reader.get_metrics_data()
        points: dict[frozenset[tuple[str, Any]], Any] = {}
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            points[frozenset(point.attributes.items())] = point.value
        return points


def providers() -> Otel:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return Otel(exporter, reader)
