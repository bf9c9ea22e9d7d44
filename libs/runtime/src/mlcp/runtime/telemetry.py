"""OpenTelemetry set-up and W3C trace-context propagation through Kafka headers."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Link, SpanKind

TRACES_FILE_ENV = "MLCP_TRACES_FILE"


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON line: a dependency-free trace sink for tests and
    offline debugging (``MLCP_TRACES_FILE``). Production exports through the standard OTEL_* SDK
    settings to a collector instead."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(span_record(span)) + "\n" for span in spans]
        with self._lock, self._path.open("a", encoding="utf-8") as out:
            out.writelines(lines)
        return SpanExportResult.SUCCESS


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def span_record(span: ReadableSpan) -> dict[str, object]:
    """The parts of a span that say where it sits in a trace (ids as W3C hex)."""
    ctx = span.get_span_context()
    assert ctx is not None
    return {
        "name": span.name,
        "service": span.resource.attributes.get("service.name"),
        "trace_id": _hex(ctx.trace_id, 32),
        "span_id": _hex(ctx.span_id, 16),
        "parent_span_id": _hex(span.parent.span_id, 16) if span.parent else None,
        "links": [
            {"trace_id": _hex(link.context.trace_id, 32), "span_id": _hex(link.context.span_id, 16)}
            for link in span.links
        ],
        "attributes": {k: str(v) for k, v in (span.attributes or {}).items()},
        "start": span.start_time,
        "end": span.end_time,
    }


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
    if traces_file := os.environ.get(TRACES_FILE_ENV):
        # Written as each span ends, so that a test reads what a live service did.
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(Path(traces_file))))
    trace.set_tracer_provider(provider)
    return provider


def current_trace_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the active span, for an outgoing record."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the active span, to keep with a lifecycle's state."""
    return current_trace_headers().get("traceparent")


@contextmanager
def resume_trace(traceparent: str | None, name: str, **attributes: str) -> Iterator[None]:
    """Continue a lifecycle's trace from a ``traceparent`` kept in a service's state.

    Work that a lifecycle waits for — a training run picked up by a worker, an approval given
    through the registry's API, a deadline found by a sweep — runs under its own trigger's span
    (an HTTP request, a poll loop). Inside this block a span that is a child of the lifecycle's
    stored context is active, linked to that trigger's span, so what is emitted here carries the
    lifecycle's trace in its ``traceparent`` (even when its cause is an event of a batch, whose
    own trace it would carry otherwise) and the trace records what caused the step.
    Without a stored context (state written before traces were kept) it does nothing.
    """
    if not traceparent:
        yield
        return
    parent = propagate.extract({"traceparent": traceparent})
    trigger = trace.get_current_span().get_span_context()
    stored = trace.get_current_span(parent).get_span_context()
    links = (
        [Link(trigger)]
        if trigger.is_valid
        and (trigger.trace_id, trigger.span_id) != (stored.trace_id, stored.span_id)
        else []
    )
    tracer = trace.get_tracer("mlcp.runtime")
    # What is emitted in here belongs to the lifecycle, not to the trace of the batch event
    # that caused it (outgoing_trace_headers would otherwise pick that event's trace).
    token = _cause_traces.set(None)
    try:
        with tracer.start_as_current_span(
            name, context=parent, links=links, kind=SpanKind.INTERNAL, attributes=attributes
        ):
            yield
    finally:
        _cause_traces.reset(token)


def resumed_trace_headers(traceparent: str | None, name: str, **attributes: str) -> dict[str, str]:
    """Trace headers for one outgoing record that resumes ``traceparent`` (see
    :func:`resume_trace`); the active span's headers when there is nothing to resume."""
    with resume_trace(traceparent, name, **attributes):
        return current_trace_headers()


# The traceparent of each event of the batch being handled, by event id: a batch is consumed
# under one span, but what an event of it causes belongs to that event's own trace.
_cause_traces: ContextVar[Mapping[str, str] | None] = ContextVar("mlcp_cause_traces", default=None)


@contextmanager
def cause_traces(traces: Mapping[str, str]) -> Iterator[None]:
    """While handling a batch: the ``traceparent`` of each of its events, by event id."""
    token = _cause_traces.set(traces)
    try:
        yield
    finally:
        _cause_traces.reset(token)


def outgoing_trace_headers(causationid: str | None, event_type: str) -> dict[str, str]:
    """Trace headers of an event about to be emitted: its cause's own trace when the cause came
    in a batch (linked to the batch's span), else the active span's."""
    traces = _cause_traces.get()
    traceparent = traces.get(causationid) if traces and causationid else None
    if traceparent is None:
        return current_trace_headers()
    return resumed_trace_headers(traceparent, f"mlcp.emit {event_type}")


def record_traceparent(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    """The ``traceparent`` header of a Kafka record, if any."""
    for key, value in headers or ():
        if key == "traceparent":
            return value.decode("latin-1")
    return None
