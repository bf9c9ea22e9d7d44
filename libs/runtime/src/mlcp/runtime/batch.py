"""Batch consumption for high-volume topics (predictions, feedback).

One Kafka batch → its contract-valid, not-yet-applied events → ONE handler call in ONE
transaction with ONE bulk inbox insert, then the offsets of the whole batch are settled. The
per-record consumer pays a transaction per event; this pays one per batch.

Failure handling keeps the per-record guarantees:
* an invalid record goes to the DLQ on its own; the rest of the batch is applied;
* a handler that keeps failing on the batch is retried with backoff, then the batch is applied
  one event at a time, so only the events that still fail go to the DLQ;
* PostgreSQL or Kafka unreachable → the whole batch is read again after a backoff.

Decoding is batched too (:class:`BatchDecoder`): the records are parsed by pydantic-core's JSON
parser and validated against the contract in ONE pydantic call for the whole batch, instead of
``decode_event``'s stdlib ``json`` + a validation call per record (3× cheaper per event). The
rules are exactly ``decode_event``'s — the same envelope model validates every record — and any
record the fast path refuses is decoded again by ``decode_event`` alone, so that its dead letter
carries the same reason. PredictionLogged and FeedbackReceived, the topics that carry tens of
thousands of events a second, take msgspec's faster path instead (:mod:`mlcp.contracts.wire`,
~4× cheaper again, with the same guarantee); their handlers receive WireEvents.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import pydantic_core
from pydantic import TypeAdapter, ValidationError

from mlcp.contracts import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    CloudEvent,
    ContractError,
    decode_event,
    envelope_of,
)
from mlcp.contracts.wire import WireDecoder, wire_decoder
from mlcp.runtime import inbox
from mlcp.runtime.consumer import INFRA_ERRORS, DurableConsumer, Outcome, Tx
from mlcp.runtime.dlq import UNEXPECTED_SOURCE
from mlcp.runtime.faults import CONSUMER_AFTER_COMMIT, crash_point
from mlcp.runtime.telemetry import cause_traces, record_traceparent

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[Any], Tx], Awaitable[None]]
"""``handler(events, tx)``: CloudEvents, or WireEvents for the types mlcp.contracts.wire decodes."""

SPECVERSION = "1.0"


_gc_pauses = 0


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is processed.

    A batch allocates tens of container objects per event (parsed JSON, models, arrays) that
    all stay alive until it ends; at CPython's default threshold (a collection every 700 net
    allocations) that is hundreds of collections per 5,000-event batch, each walking the live
    batch again: ~25 % of the ingest CPU, measured. Reference counting frees the batch when it
    ends; any cycle is found by the first collection after it. Nested or concurrent batches
    (two batch consumers in one loop) share one pause, lifted when the last one ends.
    """
    global _gc_pauses
    if _gc_pauses == 0 and not gc.isenabled():
        yield  # someone else turned collection off: not ours to turn back on
        return
    _gc_pauses += 1
    gc.disable()
    try:
        yield
    finally:
        _gc_pauses -= 1
        if _gc_pauses == 0:
            gc.enable()


class BatchDecoder:
    """Decodes the records of one event type, a batch at a time.

    ``decode(values)`` returns, per record, its event or None where the record must be decoded
    by ``decode_event`` alone (it breaks the contract, or the fast path could not tell). Every
    check of ``decode_event`` is made: size, JSON (pydantic-core's parser, which refuses NaN /
    Infinity and invalid UTF-8 like ``decode_event``'s), a JSON object, ``specversion`` "1.0",
    ``id`` and ``time`` present, and the envelope model of the expected type, whose validators
    also refuse another ``type``.
    """

    def __init__(self, event_type: str) -> None:
        self.event_type = event_type
        envelope: Any = envelope_of(EVENT_TYPES[event_type])
        self._many: TypeAdapter[list[CloudEvent[Any]]] = TypeAdapter(list[envelope])

    def decode(self, values: Sequence[bytes | None]) -> list[CloudEvent[Any] | None]:
        out: list[CloudEvent[Any] | None] = [None] * len(values)
        objects: list[dict[str, Any]] = []
        where: list[int] = []
        for i, raw in enumerate(values):
            if not raw or len(raw) > MAX_EVENT_BYTES:
                continue
            try:
                obj = pydantic_core.from_json(raw, allow_inf_nan=False)
            except ValueError:
                continue
            # The envelope model defaults id and time for new events; the wire must carry them.
            if (
                type(obj) is dict
                and obj.get("specversion") == SPECVERSION
                and "id" in obj
                and "time" in obj
            ):
                objects.append(obj)
                where.append(i)
        # One call for the batch; a failing record is dropped (left to decode_event) and the
        # rest validated again. Two rounds at most: then every record is left to decode_event.
        for _ in range(2):
            if not objects:
                break
            try:
                events = self._many.validate_python(objects)
            except ValidationError as exc:
                bad = {err["loc"][0] for err in exc.errors(include_url=False) if err["loc"]}
                keep = [k for k in range(len(objects)) if k not in bad]
                if len(keep) == len(objects):
                    break
                objects = [objects[k] for k in keep]
                where = [where[k] for k in keep]
                continue
            for i, event in zip(where, events, strict=True):
                out[i] = event
            break
        return out

    def adopt(self, event: CloudEvent[Any]) -> CloudEvent[Any]:
        """The form handlers get of an event ``decode_event`` decoded: the same."""
        return event


class _Abandon(Exception):
    """Roll the batch's transaction back and answer ``outcome``."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome


def _traces(records_by_id: dict[str, Any]) -> dict[str, str]:
    """The trace context each event's record carried, by event id."""
    return {
        event_id: traceparent
        for event_id, record in records_by_id.items()
        if (traceparent := record_traceparent(record.headers)) is not None
    }


class BatchConsumer(DurableConsumer):
    """Applies batches of one event type through a batch handler."""

    def __init__(self, event_type: str, handler: BatchHandler, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.event_type = event_type
        self._batch_handler = handler
        # The high-volume types have a faster, contract-equivalent decoder (mlcp.contracts.wire).
        self._decoder: BatchDecoder | WireDecoder = wire_decoder(event_type) or BatchDecoder(
            event_type
        )

    @property
    def topics(self) -> list[str]:
        return [self._settings.topic(self.event_type)]

    async def process_batch(self, records: Sequence[Any]) -> Outcome:
        """Apply one batch; RETRY_LATER means "read the whole batch again"."""
        started = time.perf_counter()
        values = [record.value for record in records]
        if isinstance(self._decoder, WireDecoder):
            return await self._claim_ahead(records, values, self._decoder, started)
        decoded = await self._decode(records, values)
        if isinstance(decoded, Outcome):
            return decoded
        events, records_by_id = decoded
        if not events:
            return Outcome.APPLIED
        with cause_traces(_traces(records_by_id)):
            return await self._apply_with_retries(events, records_by_id, started)

    async def _decode(
        self, records: Sequence[Any], values: list[bytes | None]
    ) -> tuple[list[Any], dict[str, Any]] | Outcome:
        """The batch's valid events, each once, with their records; bad records dead-lettered
        (RETRY_LATER when the dead-letter topic cannot be written)."""
        event_type = self.event_type
        events: list[Any] = []
        records_by_id: dict[str, Any] = {}
        decoded = self._decoder.decode(values)
        for record, fast in zip(records, decoded, strict=True):
            try:
                event = fast or self._decoder.adopt(
                    decode_event(record.value or b"", expected_type=event_type)
                )
            except ContractError as exc:
                outcome = await self._dead_letter(record, exc.reason, str(exc), attempts=0)
                if outcome is Outcome.RETRY_LATER:
                    return outcome
                continue
            if (refused := self.refused_source(event_type, event.source)) is not None:
                outcome = await self._dead_letter(record, UNEXPECTED_SOURCE, refused, attempts=0)
                if outcome is Outcome.RETRY_LATER:
                    return outcome
                continue
            if event.id not in records_by_id:  # the same event twice in one batch
                records_by_id[event.id] = record
                events.append(event)
        return events, records_by_id

    async def _claim_ahead(
        self,
        records: Sequence[Any],
        values: list[bytes | None],
        decoder: WireDecoder,
        started: float,
    ) -> Outcome:
        """The first attempt at a high-volume batch, pipelined: the ids (cheap to find) are
        claimed in the inbox while the records are decoded, so that PostgreSQL inserts the
        inbox rows — the costliest step of ingestion — on the other core meanwhile. Ids claimed
        for records that turn out invalid are released in the same transaction; later attempts
        (after a handler failure) take the plain path."""
        topic, name = self.topics[0], self.inbox_name(self.event_type)
        ahead = list(dict.fromkeys(i for i in decoder.ids(values) if i is not None))
        decoded: tuple[list[Any], dict[str, Any]] | Outcome = Outcome.RETRY_LATER
        try:
            async with self._pool().acquire() as conn, conn.transaction():
                claim = asyncio.ensure_future(inbox.claim_many(conn, name, ahead))
                try:
                    await asyncio.sleep(0)  # the INSERT leaves for PostgreSQL; decode meanwhile
                    decoded = await self._decode(records, values)
                finally:
                    # The connection serves one statement at a time: the claim must end first.
                    fresh = (await asyncio.gather(claim, return_exceptions=True))[0]
                if isinstance(fresh, BaseException):
                    raise fresh
                if isinstance(decoded, Outcome):
                    raise _Abandon(decoded)
                events, records_by_id = decoded
                valid = set(records_by_id)
                claimed = set(ahead)
                stragglers = [i for i in records_by_id if i not in fresh and i not in claimed]
                if stragglers:  # valid by decode_event only, without an id the fast path saw
                    fresh |= await inbox.claim_many(conn, name, stragglers)
                if unused := [i for i in fresh if i not in valid]:
                    await inbox.release_many(conn, name, unused)
                new_events = [e for e in events if e.id in fresh]
                tx = Tx(conn, service=self._service, settings=self._settings)
                if new_events:
                    with cause_traces(_traces(records_by_id)):
                        await self._batch_handler(new_events, tx)
            self.committed(tx)
        except _Abandon as abandon:
            return abandon.outcome
        except INFRA_ERRORS as exc:
            return await self._back_off(topic, exc)
        except Exception as exc:
            if isinstance(decoded, Outcome):
                raise  # not a handler failure: the batch is read again
            events, records_by_id = decoded
            self._metrics.handler_retries.labels(topic).inc()
            log.warning("batch handler for %s failed (attempt 1): %s", topic, exc)
            await asyncio.sleep(self._backoff(1))
            with cause_traces(_traces(records_by_id)):
                return await self._apply_with_retries(events, records_by_id, started, attempt=1)
        self._applied(len(events), len(new_events), started)
        return Outcome.APPLIED

    async def _apply_with_retries(
        self, events: list[Any], records_by_id: dict[str, Any], started: float, attempt: int = 0
    ) -> Outcome:
        topic, event_type, handler = self.topics[0], self.event_type, self._batch_handler
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
        self._applied(len(events), applied, started)
        return Outcome.APPLIED

    def _applied(self, count: int, applied: int, started: float) -> None:
        topic = self.topics[0]
        self._infra_failures = 0
        self._metrics.handler_seconds.labels(topic).observe(time.perf_counter() - started)
        self._metrics.events_handled.labels(topic, Outcome.APPLIED.value).inc(applied)
        if duplicates := count - applied:
            self._metrics.events_handled.labels(topic, Outcome.DUPLICATE.value).inc(duplicates)

    async def _apply_batch(self, events: list[Any], event_type: str, handler: BatchHandler) -> int:
        async with self._pool().acquire() as conn, conn.transaction():
            fresh = await inbox.claim_many(
                conn, self.inbox_name(event_type), [e.id for e in events]
            )
            new_events = [e for e in events if e.id in fresh]
            tx = Tx(conn, service=self._service, settings=self._settings)
            if new_events:
                await handler(new_events, tx)
        self.committed(tx)
        return len(new_events)

    async def _one_by_one(
        self,
        events: list[Any],
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
            with gc_paused():
                outcome = await self.process_batch(records)
        except Exception:
            log.exception("unexpected error while processing a batch; it will be read again")
            outcome = Outcome.RETRY_LATER
        if outcome is Outcome.RETRY_LATER:
            await msg.nack()
            return
        crash_point(CONSUMER_AFTER_COMMIT)
        await self.settle(msg.consumer, records)
