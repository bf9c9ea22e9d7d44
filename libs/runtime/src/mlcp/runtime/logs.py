"""Structured logs that carry the event id and correlation id being handled."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

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


REPEAT_INTERVAL_S = 60.0
"""How often a repeating failure is written to the log (with its count) by ``LogThrottle``."""


class LogThrottle:
    """Writes a repeating log line once per interval, then says how often it repeated.

    An outage or a poison record makes the same failure happen on every attempt, and one line per
    attempt buried a service's log (42,287 lines in two minutes, once). ``key`` names what counts
    as "the same" (a topic and an error type, say): the first line of a key is written at once,
    the ones within ``interval_s`` after it are only counted, and the first one after that says
    how many were held back. Per process; the metrics keep the exact counts.
    """

    MAX_KEYS = 1000

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = REPEAT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval_s
        self._clock = clock
        self._seen: dict[Hashable, list[float]] = {}  # key → [when last written, held back]

    def log(self, level: int, key: Hashable, msg: str, *args: Any, exc_info: Any = None) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than the interval ago; True if
        written."""
        now = self._clock()
        state = self._seen.get(key)
        if state is not None and now - state[0] < self._interval:
            state[1] += 1
            return False
        if state is None and len(self._seen) >= self.MAX_KEYS:
            # Bounded: forget the keys whose interval is over (their counts are lost, not lines).
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._interval}
            if len(self._seen) >= self.MAX_KEYS:
                self._seen.clear()
        if state is not None and state[1]:
            msg += " (%d more like this in the last %.0f s)"
            args = (*args, int(state[1]), now - state[0])
        self._seen[key] = [now, 0]
        self._logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key: Hashable, msg: str, *args: Any, exc_info: Any = None) -> bool:
        return self.log(logging.WARNING, key, msg, *args, exc_info=exc_info)

    def error(self, key: Hashable, msg: str, *args: Any, exc_info: Any = None) -> bool:
        return self.log(logging.ERROR, key, msg, *args, exc_info=exc_info)


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
