"""Batch consumption for high-volume topics (predictions, feedback).

One Kafka batch → its contract-valid, not-yet-applied events → ONE handler call in ONE
transaction with ONE bulk inbox insert, then the offsets of the whole batch are settled. The
per-record consumer pays a transaction per event; this pays one per batch.

Failure handling keeps the per-record guarantees:
* an invalid record goes to the DLQ on its own; the rest of the batch is applied;
* a handler that keeps failing on the batch is retried with backoff, then the batch is applied
  one event at a time, so only the events that still fail go to the DLQ;
* PostgreSQL or Kafka unreachable → the whole batch is read again after a backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mlcp.contracts import CloudEvent, ContractError, decode_event
from mlcp.runtime import inbox
from mlcp.runtime.consumer import INFRA_ERRORS, DurableConsumer, Outcome, Tx
from mlcp.runtime.faults import CONSUMER_AFTER_COMMIT, crash_point

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[CloudEvent[Any]], Tx], Awaitable[None]]


class BatchConsumer(DurableConsumer):
    """Applies batches of one event type through a batch handler."""

    def __init__(self, event_type: str, handler: BatchHandler, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.event_type = event_type
        self._batch_handler = handler

    @property
    def topics(self) -> list[str]:
        return [self._settings.topic(self.event_type)]

    async def process_batch(self, records: Sequence[Any]) -> Outcome:
        """Apply one batch; RETRY_LATER means "read the whole batch again"."""
        topic, event_type, handler = self.topics[0], self.event_type, self._batch_handler
        started = time.perf_counter()
        events: list[CloudEvent[Any]] = []
        records_by_id: dict[str, Any] = {}
        for record in records:
            try:
                event = decode_event(record.value or b"", expected_type=event_type)
            except ContractError as exc:
                outcome = await self._dead_letter(record, exc.reason, str(exc), attempts=0)
                if outcome is Outcome.RETRY_LATER:
                    return outcome
                continue
            if event.id not in records_by_id:  # the same event twice in one batch
                records_by_id[event.id] = record
                events.append(event)
        if not events:
            return Outcome.APPLIED

        attempt = 0
        while True:
            attempt += 1
            try:
                applied = await self._apply_batch(events, event_type, handler)
                break
            except INFRA_ERRORS as exc:
                return await self._back_off(topic, exc)
            except Exception as exc:
                if attempt >= self._settings.handler_max_attempts:
                    log.warning("batch handler for %s failed %d times; one by one", topic, attempt)
                    return await self._one_by_one(events, records_by_id, event_type, handler)
                self._metrics.handler_retries.labels(topic).inc()
                log.warning("batch handler for %s failed (attempt %d): %s", topic, attempt, exc)
                await asyncio.sleep(self._backoff(attempt))
        self._infra_failures = 0
        self._metrics.handler_seconds.labels(topic).observe(time.perf_counter() - started)
        self._metrics.events_handled.labels(topic, Outcome.APPLIED.value).inc(applied)
        duplicates = len(events) - applied
        if duplicates:
            self._metrics.events_handled.labels(topic, Outcome.DUPLICATE.value).inc(duplicates)
        return Outcome.APPLIED

    async def _apply_batch(
        self, events: list[CloudEvent[Any]], event_type: str, handler: BatchHandler
    ) -> int:
        async with self._pool().acquire() as conn, conn.transaction():
            fresh = await inbox.claim_many(
                conn, self.inbox_name(event_type), [e.id for e in events], event_type
            )
            new_events = [e for e in events if e.id in fresh]
            if new_events:
                tx = Tx(conn, service=self._service, settings=self._settings)
                await handler(new_events, tx)
        return len(new_events)

    async def _one_by_one(
        self,
        events: list[CloudEvent[Any]],
        records_by_id: dict[str, Any],
        event_type: str,
        handler: BatchHandler,
    ) -> Outcome:
        topic = self._settings.topic(event_type)
        for event in events:
            try:
                applied = await self._apply_batch([event], event_type, handler)
            except INFRA_ERRORS as exc:
                return await self._back_off(topic, exc)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                record = records_by_id[event.id]
                attempts = self._settings.handler_max_attempts + 1
                outcome = await self._dead_letter(record, "handler_failed", error, attempts)
                if outcome is Outcome.RETRY_LATER:
                    return outcome
                continue
            outcome = Outcome.APPLIED if applied else Outcome.DUPLICATE
            self._metrics.events_handled.labels(topic, outcome.value).inc()
        return Outcome.APPLIED

    async def on_batch_message(self, msg: Any) -> None:
        """FastStream batch entry point (``AckPolicy.MANUAL``)."""
        records = msg.raw_message
        try:
            outcome = await self.process_batch(records)
        except Exception:
            log.exception("unexpected error while processing a batch; it will be read again")
            outcome = Outcome.RETRY_LATER
        if outcome is Outcome.RETRY_LATER:
            await msg.nack()
            return
        crash_point(CONSUMER_AFTER_COMMIT)
        await self.settle(msg.consumer, records)
