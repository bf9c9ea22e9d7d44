"""Transactional outbox and its relay.

``enqueue`` writes an event in the caller's transaction; the relay publishes committed rows with
the durable producer and marks them sent. A crash between the publish and the mark republishes
the same CloudEvents ``id`` after restart, which consumers' inboxes drop: at-least-once on the
wire, exactly-once in effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import zlib
from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg
from aiokafka import AIOKafkaProducer
from asyncpg.pool import PoolConnectionProxy
from opentelemetry.trace import Span
from pydantic import BaseModel

from mlcp.contracts import ALL_TOPICS, CloudEvent, encode_event, new_event
from mlcp.runtime.backoff import Backoff
from mlcp.runtime.db import Conn
from mlcp.runtime.faults import OUTBOX_AFTER_PUBLISH, crash_point
from mlcp.runtime.kafka import encode_headers
from mlcp.runtime.metrics import RuntimeMetrics
from mlcp.runtime.telemetry import (
    end_producer_span,
    outgoing_trace_headers,
    producer_trace_headers,
    start_producer_span,
)

log = logging.getLogger(__name__)


class Cause(Protocol):
    """What an emitted event takes from its cause: a CloudEvent, or a batch's WireEvent."""

    @property
    def id(self) -> str: ...

    @property
    def correlationid(self) -> str | None: ...


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel that wakes ``schema``'s relay."""
    return f"mlcp_outbox_{schema}"


async def enqueue(conn: Conn, schema: str, event: CloudEvent[Any], *, topic: str) -> None:
    """Add ``event`` to the outbox inside the caller's open transaction."""
    await enqueue_many(conn, schema, [(event, topic)])


async def enqueue_many(
    conn: Conn, schema: str, events: Sequence[tuple[CloudEvent[Any], str]]
) -> None:
    """Add ``(event, topic)`` pairs to the outbox, in this order, in one round trip.

    The insert and the wake-up are one statement: a batch handler that decides many events pays
    one round trip for all of them, a single emit one instead of two.
    """
    if not events:
        return
    # Each event's own trace headers: in a batch, its cause's trace (outgoing_trace_headers).
    headers = [
        json.dumps(
            {
                "content-type": "application/cloudevents+json",
                **outgoing_trace_headers(event.causationid, event.type),
            }
        )
        for event, _ in events
    ]
    await conn.execute(
        """WITH queued AS (
               INSERT INTO mlcp_outbox (event_id, topic, key, payload, headers)
               SELECT e.event_id, e.topic, e.key, e.payload, e.headers::jsonb
               FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[])
                    WITH ORDINALITY AS e(event_id, topic, key, payload, headers, ord)
               ORDER BY e.ord  -- ids (the relay's publish order) follow the emit order
               RETURNING 1)
           SELECT pg_notify($6, '')""",
        [event.id for event, _ in events],
        [topic for _, topic in events],
        [event.subject for event, _ in events],
        [encode_event(event) for event, _ in events],
        headers,
        # NOTIFY is delivered on commit only and is not replayed: a wake-up, never the data.
        notify_channel(schema),
    )


class OutboxRelay:
    """Publishes a service's committed outbox rows to Kafka, oldest first."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        schema: str,
        metrics: RuntimeMetrics,
        batch_size: int = 200,
        poll_interval_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._schema = schema
        self._metrics = metrics
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()
        # Several instances of a service may run relays; one publishes at a time so that the
        # per-key order of the outbox is the order on the topic.
        self._lock_key = zlib.crc32(f"mlcp-outbox:{schema}".encode())

    def wake(self) -> None:
        """Publish now: called in-process right after a transaction that emitted commits, so
        the relay does not wait for its NOTIFY to travel through PostgreSQL and back."""
        self._wake.set()

    async def drain_once(self) -> int:
        """Claim one batch of pending rows, publish them (acks=all), mark them sent."""
        async with self._pool.acquire() as conn, conn.transaction():
            # The advisory lock and the claim in one round trip: the lock is taken once (an
            # InitPlan) and, if another relay holds it, nothing is claimed.
            rows = await conn.fetch(
                """WITH relay AS (SELECT pg_try_advisory_xact_lock($2) AS held)
                   SELECT id, event_id, topic, key, payload, headers FROM mlcp_outbox
                   WHERE (SELECT held FROM relay) AND published_at IS NULL ORDER BY id
                   LIMIT $1 FOR UPDATE SKIP LOCKED""",
                self._batch_size,
                self._lock_key,
            )
            if not rows:
                return 0
            # Hand the whole batch to the producer before awaiting any ack, so it goes out in
            # as few requests as possible; the idempotent producer keeps the order within a
            # partition even when it retries.
            spans: list[Span] = []
            acks: list[asyncio.Future[Any]] = []
            try:
                for row in rows:
                    acks.append(await self._send(row, spans))
                landed = await asyncio.gather(*acks)
            except BaseException as exc:
                for span in spans:
                    end_producer_span(span, error=exc)
                raise
            for span, metadata in zip(spans, landed, strict=True):
                end_producer_span(span, partition=metadata.partition, offset=metadata.offset)
            crash_point(OUTBOX_AFTER_PUBLISH)
            for row in rows:
                self._metrics.events_published.labels(self._event_type(row["topic"])).inc()
            await conn.execute(
                "UPDATE mlcp_outbox SET published_at = now() WHERE id = any($1::bigint[])",
                [row["id"] for row in rows],
            )
        self._metrics.outbox_published.inc(len(rows))
        return len(rows)

    def _event_type(self, topic: str) -> str:
        # The topic behind a tenant's prefix is the CloudEvents type: its last dotted parts.
        for known in ALL_TOPICS:
            if topic.endswith(known):
                return known
        return topic

    async def _send(self, row: asyncpg.Record, spans: list[Span]) -> asyncio.Future[Any]:
        """Hand one row to the producer under its PRODUCER span; the future of its ack.

        The span continues the trace the row was emitted in (its stored headers), and the
        record carries the span's own context, so the consumer's span follows the send."""
        value = bytes(row["payload"])
        key = row["key"].encode() if row["key"] is not None else None
        stored: dict[str, str] = json.loads(row["headers"])
        span = start_producer_span(
            row["topic"], parent=stored, key=key, message_id=row["event_id"], size=len(value)
        )
        spans.append(span)
        ack: asyncio.Future[Any] = await self._producer.send(
            row["topic"],
            value=value,
            key=key,
            headers=encode_headers(producer_trace_headers(span, stored)),
        )
        return ack

    async def drain(self) -> int:
        """Publish until nothing is pending; returns how many rows were sent."""
        total = 0
        while True:
            n = await self.drain_once()
            total += n
            # A short batch took everything committed when it was claimed; what commits later
            # wakes the relay again (in-process or by NOTIFY), so no empty claim is needed.
            if n < self._batch_size:
                return total

    async def pending(self) -> int:
        """Rows committed but not yet published."""
        async with self._pool.acquire() as conn:
            count = await conn.fetchval(
                "SELECT count(*) FROM mlcp_outbox WHERE published_at IS NULL"
            )
        return int(count)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Publish forever: woken in-process or by NOTIFY, and by a poll in case a wake-up was
        missed."""
        listener: PoolConnectionProxy | None = None
        backoff = Backoff(0.2, 5.0)
        gauge_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if listener is None or listener.is_closed():
                    listener = conn = await self._pool.acquire()
                    await conn.add_listener(notify_channel(self._schema), self._on_notify)
                self._wake.clear()
                await self.drain()
                if loop.time() - gauge_at >= self._poll_interval_s:
                    # A count per wake-up would cost a round trip per published batch.
                    self._metrics.outbox_pending.set(await self.pending())
                    gauge_at = loop.time()
                backoff.reset()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
            except asyncio.CancelledError:
                if listener is not None and not listener.is_closed():
                    with contextlib.suppress(Exception):
                        await listener.remove_listener(
                            notify_channel(self._schema), self._on_notify
                        )
                    await self._pool.release(listener)
                raise
            except Exception as exc:
                # Kafka or PostgreSQL is away: the rows stay pending, try again with backoff.
                delay = backoff.next()
                log.warning(
                    "outbox relay: %s: %s; retrying in %.1fs", type(exc).__name__, exc, delay
                )
                if listener is not None:
                    with contextlib.suppress(Exception):
                        await self._pool.release(listener)
                    listener = None
                await asyncio.sleep(delay)


def new_outgoing(
    data: BaseModel,
    *,
    service: str,
    cause: Cause | None = None,
    subject: str | None = None,
    correlationid: str | None = None,
) -> CloudEvent[Any]:
    """An event emitted by ``service``, chained to the event that caused it (if any)."""
    if cause is not None:
        correlationid = correlationid or cause.correlationid or cause.id
    return new_event(
        data,
        source=f"mlcp/{service}",
        subject=subject,
        correlationid=correlationid,
        causationid=cause.id if cause is not None else None,
    )
