"""Prediction logging off the request path: rows into a bounded buffer, Arrow batches to Kafka.

``log()`` only appends a tuple (no I/O, no encoding); a background task flushes a batch when it
holds ``batch_rows`` rows or its oldest row is ``max_age_s`` old, as one
``mlcp.prediction.batch_logged.v1`` record (acks=all, idempotent producer). A batch leaves the
buffer only once Kafka acknowledged it.

When Kafka is down the buffer fills up to ``max_buffered`` rows and then, by ``on_full``:
``"drop"`` (the default) refuses new rows and counts them in ``stats.dropped``; ``"block"``
makes ``log_wait()`` wait for room (``log()`` still never blocks: it drops and counts). Memory
stays bounded either way. ``close()`` flushes what is buffered (within its timeout); after a
``kill -9`` at most the buffered rows — ``max_buffered`` at worst — are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aiokafka import AIOKafkaProducer

from mlcp.client.kafka import make_producer
from mlcp.client.settings import ClientSettings
from mlcp.contracts import FeedbackReceived, encode_event, new_event, topics
from mlcp.contracts.prediction_batch import (
    FEATURE_PREFIX,
    MAX_BATCH_ROWS,
    InvalidBatch,
    encode_batch,
    new_headers,
)

log = logging.getLogger("mlcp.client")

Row = tuple[str, str, str | None, int, float, bool, Any, float | None, Mapping[str, Any]]
"""request_id, version, alias, ts (µs since the epoch), latency_ms, error, prediction,
probability, features."""


@dataclass
class LoggerStats:
    """Counters of the logger (exported by ``mlcp serve`` on /metrics)."""

    logged: int = 0
    """Rows accepted into the buffer."""
    sent: int = 0
    """Rows acknowledged by Kafka."""
    dropped: int = 0
    """Rows refused because the buffer was full (Kafka down or too slow)."""
    invalid: int = 0
    """Rows dropped because they break the batch contract (logged with the reason)."""
    batches: int = 0
    send_errors: int = 0
    feedback_sent: int = 0


class PredictionLogger:
    """Buffers one model's predictions and sends them as columnar batches."""

    def __init__(
        self,
        settings: ClientSettings,
        model: str,
        *,
        source: str = "mlcp-client",
        batch_rows: int = 1000,
        max_age_s: float = 1.0,
        max_buffered: int = 100_000,
        on_full: Literal["drop", "block"] = "drop",
        producer: AIOKafkaProducer | None = None,
    ) -> None:
        if not 1 <= batch_rows <= MAX_BATCH_ROWS:
            raise ValueError(f"batch_rows must be within 1..{MAX_BATCH_ROWS}")
        if max_buffered < batch_rows:
            raise ValueError("max_buffered must be at least batch_rows")
        self.model = model
        self.source = source
        self.batch_rows = batch_rows
        self.max_age_s = max_age_s
        self.max_buffered = max_buffered
        self.on_full = on_full
        self.stats = LoggerStats()
        self._settings = settings
        self._producer = producer
        self._rows: deque[Row] = deque()
        self._oldest: float | None = None
        self._feedback: deque[FeedbackReceived] = deque(maxlen=max_buffered)
        self._lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._room: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def buffered(self) -> int:
        """Rows waiting to be sent."""
        return len(self._rows)

    async def start(self) -> None:
        """Start the background flusher (Kafka may still be down: it keeps trying)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="mlcp-prediction-logger")

    def log(
        self,
        *,
        request_id: str,
        version: str,
        features: Mapping[str, Any],
        prediction: Any,
        latency_ms: float,
        alias: str | None = None,
        probability: float | None = None,
        error: bool = False,
        ts: datetime | None = None,
    ) -> bool:
        """Buffer one prediction (never blocks, any thread); False when it was dropped."""
        micros = time.time_ns() // 1000 if ts is None else int(ts.timestamp() * 1_000_000)
        row: Row = (
            request_id, version, alias, micros, float(latency_ms), error,
            prediction, probability, features,
        )  # fmt: skip
        with self._lock:
            if len(self._rows) >= self.max_buffered:
                self.stats.dropped += 1
                return False
            if not self._rows:
                self._oldest = time.monotonic()
            self._rows.append(row)
            self.stats.logged += 1
            full = len(self._rows) == self.batch_rows
        if full and self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)
        return True

    async def log_wait(self, **row: Any) -> None:
        """Like ``log`` but, under ``on_full="block"``, wait for room instead of dropping."""
        while self.on_full == "block" and self.buffered >= self.max_buffered:
            assert self._room is not None, "start() the logger first"
            self._room.clear()
            await self._room.wait()
        self.log(**row)

    def feedback(self, *, request_id: str, label: Any, version: str | None = None) -> None:
        """Queue the true label of an earlier prediction (sent as ``FeedbackReceived``)."""
        self._feedback.append(
            FeedbackReceived(
                model=self.model, version=version, request_id=request_id, label=label,
                ts=datetime.now(UTC),
            )
        )  # fmt: skip

    async def close(self, timeout_s: float = 30.0) -> None:
        """Flush everything buffered (up to ``timeout_s``), then stop."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except TimeoutError:
                log.error("logger closed with %d rows unsent (Kafka unreachable)", self.buffered)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()

    async def _run(self) -> None:
        assert self._wake is not None
        backoff = 0.1
        while True:
            if not self._due():
                if self._closing:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._until_due())
                self._wake.clear()
                continue
            try:
                await self._send_due()
                backoff = 0.1
            except Exception as exc:
                self.stats.send_errors += 1
                log.warning("prediction batch not sent (%s); %d rows buffered", exc, self.buffered)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _due(self) -> bool:
        if self._feedback:
            return True
        if not self._rows:
            return False
        if self._closing or len(self._rows) >= self.batch_rows:
            return True
        return self._oldest is not None and time.monotonic() - self._oldest >= self.max_age_s

    def _until_due(self) -> float:
        if self._oldest is None or not self._rows:
            return self.max_age_s
        return max(0.001, self.max_age_s - (time.monotonic() - self._oldest))

    async def _send_due(self) -> None:
        producer = await self._ready_producer()
        while self._feedback:
            event = new_event(self._feedback[0], source=self.source)
            await producer.send_and_wait(
                self._settings.topic(topics.FEEDBACK_RECEIVED),
                value=encode_event(event),
                key=self.model.encode(),
                headers=[("content-type", b"application/cloudevents+json")],
            )
            self._feedback.popleft()
            self.stats.feedback_sent += 1
        if self._rows:
            batch = [self._rows[i] for i in range(min(self.batch_rows, len(self._rows)))]
            await self._send_rows(producer, batch)
            with self._lock:
                for _ in batch:
                    self._rows.popleft()
                self._oldest = time.monotonic() if self._rows else None
            if self._room is not None:
                self._room.set()

    async def _send_rows(self, producer: AIOKafkaProducer, rows: list[Row]) -> None:
        try:
            body = encode_batch(columns(rows))
        except InvalidBatch as exc:
            # Too big, or a row that breaks the contract: halves, down to the rows at fault.
            if len(rows) > 1:
                half = len(rows) // 2
                await self._send_rows(producer, rows[:half])
                await self._send_rows(producer, rows[half:])
                return
            self.stats.invalid += len(rows)
            log.error("dropped a prediction that breaks the batch contract: %s", exc)
            return
        headers = new_headers(self.model, len(rows), source=self.source)
        await producer.send_and_wait(
            self._settings.topic(topics.PREDICTION_BATCH_LOGGED),
            value=body,
            key=self.model.encode(),
            headers=headers.encode(),
        )
        self.stats.sent += len(rows)
        self.stats.batches += 1

    async def _ready_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = make_producer(self._settings, client_id=f"mlcp-client-{self.model}")
            try:
                await producer.start()
            except Exception:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
        return self._producer


def columns(rows: list[Row]) -> dict[str, list[Any]]:
    """The batch's columns from buffered rows (features: one column each, null where absent)."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row[8]))
    out: dict[str, list[Any]] = {
        "request_id": [r[0] for r in rows],
        "version": [r[1] for r in rows],
        "alias": [r[2] for r in rows],
        "ts": [r[3] for r in rows],
        "latency_ms": [r[4] for r in rows],
        "error": [r[5] for r in rows],
        "prediction": [r[6] for r in rows],
        "probability": [r[7] for r in rows],
    }
    for name in names:
        out[FEATURE_PREFIX + name] = [r[8].get(name) for r in rows]
    return out
