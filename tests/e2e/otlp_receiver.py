"""A test receiver for what services send out: OTLP/HTTP traces and webhook deliveries.

It speaks the collector's side of OTLP over HTTP (``POST /v1/traces``, protobuf, optionally
gzip), decodes each ``ExportTraceServiceRequest`` with the OpenTelemetry protobuf bindings and
keeps every span as a plain dict; any other ``POST`` is kept as a webhook delivery. Standard
library HTTP server in a thread: independent of the test's event loop.
"""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def spans_of(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """Every span of an OTLP export as a dict (ids as W3C hex)."""
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "name": span.name,
                        "service": resource.get("service.name"),
                        "kind": _KINDS.get(span.kind, str(span.kind)),
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex() or None,
                        "links": [
                            {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()}
                            for link in span.links
                        ],
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                        "status": span.status.code,
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                    }
                )
    return spans


class Receiver:
    """``with Receiver() as r:`` — listens on 127.0.0.1 at ``r.url`` until the block ends."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.exports = 0
        self.deliveries: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    with receiver._lock:
                        receiver.spans += spans_of(request)
                        receiver.exports += 1
                    answer = ExportTraceServiceResponse().SerializeToString()
                    self._answer(answer, "application/x-protobuf")
                    return
                with receiver._lock:
                    receiver.deliveries.append((self.path, json.loads(body or b"null")))
                self._answer(b"{}", "application/json")

            def _answer(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:  # quiet: pytest shows failures only
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans received so far of one trace."""
        with self._lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]

    def all_spans(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.spans)
