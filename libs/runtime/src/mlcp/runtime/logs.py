"""Structured logs that carry the event id and correlation id being handled."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mlcp.runtime.telemetry import current_ids

_event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mlcp_event_id", default=None
)
_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mlcp_correlation_id", default=None
)


@contextmanager
def event_context(event_id: str | None, correlation_id: str | None) -> Iterator[None]:
    """Tag every log line written inside the block with the event being handled."""
    t1 = _event_id.set(event_id)
    t2 = _correlation_id.set(correlation_id)
    try:
        yield
    finally:
        _event_id.reset(t1)
        _correlation_id.reset(t2)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, service, event, correlation,
    and the trace and span ids of the active span (W3C hex, as trace backends show them)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            # UTC, since the timestamp says Z (Formatter.formatTime would use local time).
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if (event_id := _event_id.get()) is not None:
            entry["event_id"] = event_id
        if (correlation_id := _correlation_id.get()) is not None:
            entry["correlation_id"] = correlation_id
        if (ids := current_ids()) is not None:  # the span the line was written in
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if (event_id := _event_id.get()) is not None:
            line += f" event={event_id} correlation={_correlation_id.get()}"
        return line


def setup_logging(service: str, *, level: str = "INFO", fmt: str = "json") -> None:
    """Route the root logger to stderr in the chosen format (called once by a composition root)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter(service)
        if fmt == "json"
        else _TextFormatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
