"""OpenTelemetry set-up and W3C trace-context propagation through Kafka headers."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from importlib.metadata import entry_points
from pathlib import Path

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from mlcp.runtime.settings import ConfigurationError

TRACES_FILE_ENV = "MLCP_TRACES_FILE"
OTLP_DEFAULT_PROTOCOL = "http/protobuf"
"""What ``OTEL_TRACES_EXPORTER=otlp`` speaks when no ``OTEL_EXPORTER_OTLP_*PROTOCOL`` is set:
the OpenTelemetry specification's default. (The Python SDK's own default is gRPC, whose
exporter and its grpcio stack mlcp does not ship.)"""


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


def configured_exporters(env: Mapping[str, str] | None = None) -> list[SpanExporter]:
    """The span exporters ``OTEL_TRACES_EXPORTER`` names (comma-separated), built from the
    standard ``OTEL_EXPORTER_OTLP_*`` variables by the exporters themselves.

    ``otlp`` is OTLP over HTTP (protobuf) unless a protocol variable says otherwise; ``console``
    prints spans; ``none`` or nothing exports nothing; any other name is looked up among the
    installed exporters (the ``opentelemetry_traces_exporter`` entry points), as the SDK's own
    auto-configuration does. An unknown name or protocol stops the service with the reason.
    """
    env = os.environ if env is None else env
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "none":
            continue
        if name == "otlp":
            protocol = (
                env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or OTLP_DEFAULT_PROTOCOL
            ).strip()
            if protocol != OTLP_DEFAULT_PROTOCOL:
                raise ConfigurationError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: mlcp ships the OTLP exporter over "
                    "HTTP (http/protobuf, the collector's port 4318); for gRPC install "
                    "opentelemetry-exporter-otlp-proto-grpc and set "
                    "OTEL_TRACES_EXPORTER=otlp_proto_grpc"
                )
            name = "otlp_proto_http"
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            installed = sorted(e.name for e in entry_points(group="opentelemetry_traces_exporter"))
            raise ConfigurationError(
                f"OTEL_TRACES_EXPORTER={name}: no such span exporter is installed "
                f"(installed: otlp, none, {', '.join(installed)})"
            )
        exporter = next(iter(found)).load()()
        if not isinstance(exporter, SpanExporter):
            raise ConfigurationError(f"OTEL_TRACES_EXPORTER={name}: not a span exporter")
        exporters.append(exporter)
    return exporters


def setup_tracing(service: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install a tracer provider for ``service``.

    Spans are always created (so ``traceparent`` always travels). They are exported to
    ``exporter`` when one is given, else where the standard ``OTEL_TRACES_EXPORTER`` says
    (``otlp`` with ``OTEL_EXPORTER_OTLP_ENDPOINT`` …, ``console``), through the SDK's batch
    processor (``OTEL_BSP_*``); the sampler follows ``OTEL_TRACES_SAMPLER``, the resource
    ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``. ``MLCP_TRACES_FILE`` adds a JSON-lines
    file of every span, for debugging on one machine.
    """
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", f"mlcp-{service}")}
        )
    )
    for each in [exporter] if exporter is not None else configured_exporters():
        provider.add_span_processor(BatchSpanProcessor(each))
    if traces_file := os.environ.get(TRACES_FILE_ENV):
        # Written as each span ends, so that a test reads what a live service did.
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(Path(traces_file))))
    trace.set_tracer_provider(provider)
    return provider


def current_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the active span as W3C hex, or None outside any span."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return _hex(ctx.trace_id, 32), _hex(ctx.span_id, 16)


# --- producer spans (OpenTelemetry messaging semantic conventions, Kafka) --------------------

_MESSAGING = "mlcp.runtime.messaging"


def start_producer_span(
    topic: str,
    *,
    parent: Mapping[str, str] | None = None,
    key: bytes | str | None = None,
    message_id: str | None = None,
    size: int | None = None,
) -> Span:
    """Start the PRODUCER span of one record sent to ``topic`` (``send <topic>``).

    ``parent``: trace headers kept with the record since it was decided (the outbox row), so
    the span sits under the handler or request that emitted it even when a relay sends it
    later; None continues the active span. End it with :func:`end_producer_span`.
    """
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
    }
    if key is not None:
        attributes["messaging.kafka.message.key"] = (
            key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        )
    if message_id is not None:
        attributes["messaging.message.id"] = message_id
    if size is not None:
        attributes["messaging.message.body.size"] = size
    context = propagate.extract(parent) if parent is not None else None
    return trace.get_tracer(_MESSAGING).start_span(
        f"send {topic}", context=context, kind=SpanKind.PRODUCER, attributes=attributes
    )


def producer_trace_headers(span: Span, headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with the trace context of ``span``: the consumer continues the send."""
    carrier = {k: v for k, v in headers.items() if k not in ("traceparent", "tracestate")}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def end_producer_span(
    span: Span, *, partition: int | None = None, offset: int | None = None,
    error: BaseException | None = None,
) -> None:  # fmt: skip
    """End a PRODUCER span with where the record landed, or with the error that stopped it."""
    _landed(span, partition, offset)
    if error is not None:
        span.record_exception(error)
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, str(error)))
    span.end()


@contextmanager
def producer_span(
    topic: str, *, key: bytes | str | None = None, message_id: str | None = None,
    size: int | None = None,
) -> Iterator[Span]:  # fmt: skip
    """A PRODUCER span around one send under the active span; an exception marks it failed.
    Set where the record landed with :func:`record_landed`."""
    span = start_producer_span(topic, key=key, message_id=message_id, size=size)
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=False):
            yield span
    except BaseException as exc:
        end_producer_span(span, error=exc)
        raise
    span.end()


def record_landed(span: Span, metadata: object) -> None:
    """Note on ``span`` the partition and offset of aiokafka's ``RecordMetadata``."""
    _landed(span, getattr(metadata, "partition", None), getattr(metadata, "offset", None))


def _landed(span: Span, partition: object, offset: object) -> None:
    if isinstance(partition, int):
        span.set_attribute("messaging.destination.partition.id", str(partition))
    if isinstance(offset, int):
        span.set_attribute("messaging.kafka.offset", offset)


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
