"""OpenTelemetry set-up and W3C trace-context propagation through Kafka headers."""

from __future__ import annotations

import os

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter


def setup_tracing(service: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install a tracer provider for ``service``.

    Spans are always created (so ``traceparent`` always travels); they are exported only when an
    exporter is given or ``OTEL_TRACES_EXPORTER=console`` is set. Other ``OTEL_*`` variables keep
    their standard meaning for the SDK.
    """
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", f"mlcp-{service}")}
        )
    )
    if exporter is None and os.environ.get("OTEL_TRACES_EXPORTER") == "console":
        exporter = ConsoleSpanExporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def current_trace_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the active span, for an outgoing record."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier
