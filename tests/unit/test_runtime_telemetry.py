"""Traces out of a service: exporters from the standard OTEL_* variables, SERVER spans named by
route, trace ids in every JSON log line written inside a span, a quiet start."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from mlcp.runtime.http_tracing import ServerSpans, route_template
from mlcp.runtime.logs import JsonFormatter
from mlcp.runtime.settings import ConfigurationError
from mlcp.runtime.startup_logs import StartupNoiseFilter
from mlcp.runtime.telemetry import configured_exporters

pytestmark = pytest.mark.unit


# -- exporters --------------------------------------------------------------------------------
def test_otlp_means_otlp_over_http_to_the_standard_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    [exporter] = configured_exporters({"OTEL_TRACES_EXPORTER": "otlp"})
    assert isinstance(exporter, OTLPSpanExporter)
    assert exporter._endpoint == "http://collector:4318/v1/traces"


def test_several_exporters_and_none() -> None:
    assert configured_exporters({}) == []
    assert configured_exporters({"OTEL_TRACES_EXPORTER": "none"}) == []
    kinds = configured_exporters({"OTEL_TRACES_EXPORTER": "console, otlp"})
    assert [type(e) for e in kinds] == [ConsoleSpanExporter, OTLPSpanExporter]


def test_grpc_or_an_unknown_exporter_stops_the_service_with_the_reason() -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    with pytest.raises(ConfigurationError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL=grpc.*4318"):
        configured_exporters(env)
    with pytest.raises(ConfigurationError, match=r"OTEL_TRACES_EXPORTER=jaegr.*console"):
        configured_exporters({"OTEL_TRACES_EXPORTER": "jaegr"})


# -- SERVER spans -----------------------------------------------------------------------------
async def _ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _boom(request: Request) -> Response:
    return PlainTextResponse("no", status_code=503)


def _app() -> Starlette:
    api = Starlette(routes=[Route("/models/{model}/versions/{version}", _ok)])
    return Starlette(
        routes=[Route("/healthz", _ok), Route("/fail", _boom, methods=["POST"]), Mount("/", api)]
    )


def test_route_template_follows_mounts_and_the_router_s_choice() -> None:
    app = _app()

    def scope(path: str, method: str = "GET") -> dict[str, object]:
        return {"type": "http", "path": path, "root_path": "", "method": method}

    assert route_template(app.routes, scope("/models/churn/versions/1.2.0")) == (
        "/models/{model}/versions/{version}"
    )
    assert route_template(app.routes, scope("/nowhere")) is None
    # A wrong method: the router prefers the mount's full match (whose app answers 404) ...
    assert route_template(app.routes, scope("/fail", "GET")) is None
    # ... and without one, the route that answers 405.
    only = Starlette(routes=[Route("/fail", _boom, methods=["POST"])])
    assert route_template(only.routes, scope("/fail", "GET")) == "/fail"


def test_each_request_gets_a_server_span_named_by_its_route_continuing_the_caller() -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    app = _app()
    client = TestClient(ServerSpans(app, app.routes, tracer_provider=provider))
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert client.get("/models/churn/versions/1.2.0", headers={"traceparent": caller}).text == "ok"
    assert client.post("/fail").status_code == 503
    assert client.get("/healthz").status_code == 200  # a probe: no span

    version_span, failed = spans.get_finished_spans()
    assert version_span.name == "GET /models/{model}/versions/{version}"
    assert version_span.kind is SpanKind.SERVER
    assert f"{version_span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert version_span.parent is not None
    assert f"{version_span.parent.span_id:016x}" == "b7ad6b7169203331"
    attributes = dict(version_span.attributes or {})
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.route"] == "/models/{model}/versions/{version}"
    assert attributes["url.path"] == "/models/churn/versions/1.2.0"
    assert attributes["http.response.status_code"] == 200
    assert failed.name == "POST /fail"
    assert failed.status.status_code is StatusCode.ERROR
    assert dict(failed.attributes or {})["error.type"] == "503"


# -- logs -------------------------------------------------------------------------------------
def _line(formatter: logging.Formatter, message: str) -> dict[str, object]:
    record = logging.LogRecord("mlcp.test", logging.INFO, __file__, 1, message, None, None)
    return dict(json.loads(formatter.format(record)))


def test_json_log_lines_carry_the_trace_and_span_of_the_active_span() -> None:
    formatter = JsonFormatter("registry")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("handle") as span:
        inside = _line(formatter, "inside")
    outside = _line(formatter, "outside")
    assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert "trace_id" not in outside
    assert "span_id" not in outside


# -- a quiet start ----------------------------------------------------------------------------
def _kafka(
    level: int, message: str, name: str = "aiokafka.consumer.group_coordinator"
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_transient_kafka_complaints_at_start_become_one_info_line_each() -> None:
    noise = StartupNoiseFilter()
    heartbeat = "Heartbeat failed for group mlcp-monitor because it is rebalancing"
    first = _kafka(logging.WARNING, heartbeat)
    assert noise.filter(first)
    assert first.levelno == logging.INFO
    assert first.getMessage().startswith("waiting for consumer group mlcp-monitor to finish")
    assert not noise.filter(_kafka(logging.WARNING, heartbeat)), "said once"
    coordinator = _kafka(
        logging.ERROR, "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailable"
    )
    assert noise.filter(coordinator)
    assert coordinator.levelname == "INFO"
    real = _kafka(logging.ERROR, "Unable to connect to node 1", name="aiokafka.conn")
    assert noise.filter(real)
    assert real.levelno == logging.ERROR, "anything else is untouched"

    noise.settle()
    later = _kafka(logging.WARNING, heartbeat)
    assert noise.filter(later)
    assert later.levelno == logging.WARNING, "after start: as it is"
