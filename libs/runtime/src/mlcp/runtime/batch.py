"""Batch consumption for high-volume topics (predictions, feedback).

One Kafka batch → its contract-valid, not-yet-applied events → ONE handler call in ONE
transaction with ONE bulk inbox insert, then the offsets of the whole batch are settled. The
per-record consumer pays a transaction per event; this pays one per batch.

Failure handling keeps the per-record guarantees — one poison record never holds back the rest
of its batch, nor the other partitions the batch spans:
* an invalid record (anything its decoding raises), or an event whose source is not its topic's
  owner, goes to the DLQ on its own; the rest of the batch is applied;
* events the handler refuses (:class:`~mlcp.runtime.consumer.Refused`) go to the DLQ with its
  reason, and the batch is applied again without them (no retries, no backoff);
* a handler that keeps failing on the batch is retried with backoff, then the batch is bisected:
  halves are applied, a failing half is split again (first half first, so the batch's order is
  kept), until the events that fail alone are found — those go to the DLQ, the others are
  applied once. k bad events among n cost about 2·k·log2(n) transactions, not n;
* the dead letters of a batch are written together, each source record once even when the
  batch is read again (mlcp.runtime.dlq claims their positions);
* PostgreSQL or Kafka unreachable → the whole batch is read again after a backoff; what it
  already applied is then dropped by the inbox, what it dead-lettered is not written again.

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
    MAX_JSON_DEPTH,
    CloudEvent,
    envelope_of,
    nesting_exceeds,
)
from mlcp.contracts.codec import MAX_DESCRIBED_ERRORS
from mlcp.contracts.wire import WireDecoder, wire_decoder
from mlcp.runtime import inbox
from mlcp.runtime.consumer import (
    INFRA_ERRORS,
    DurableConsumer,
    Outcome,
    Poison,
    Refused,
    Tx,
    poison_reason,
)
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

    def __init__(
        self,
        event_type: str,
        *,
        max_bytes: int = MAX_EVENT_BYTES,
        max_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        self.event_type = event_type
        envelope: Any = envelope_of(EVENT_TYPES[event_type])
        self._many: TypeAdapter[list[CloudEvent[Any]]] = TypeAdapter(list[envelope])
        self._max_bytes = max_bytes
        self._max_depth = max_depth

    def decode(self, values: Sequence[bytes | None]) -> list[CloudEvent[Any] | None]:
        out: list[CloudEvent[Any] | None] = [None] * len(values)
        objects: list[dict[str, Any]] = []
        where: list[int] = []
        max_bytes, max_depth = self._max_bytes, self._max_depth
        for i, raw in enumerate(values):
            if not raw or len(raw) > max_bytes or nesting_exceeds(raw, max_depth):
                continue
            try:
                obj = pydantic_core.from_json(raw, allow_inf_nan=False)
            except Exception:  # anything the bytes provoke is decode_event's to name
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
                if exc.error_count() > MAX_DESCRIBED_ERRORS:
                    break  # listing them would cost seconds: every record to decode_event
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
        limits = {
            "max_bytes": self._settings.max_record_bytes,
            "max_depth": self._settings.max_json_depth,
        }
        # The high-volume types have a faster, contract-equivalent decoder (mlcp.contracts.wire).
        self._decoder: BatchDecoder | WireDecoder = wire_decoder(
            event_type, **limits
        ) or BatchDecoder(event_type, **limits)

    @property
    def topics(self) -> list[str]:
        return [self._settings.topic(self.event_type)]

    async def process_batch(self, records: Sequence[Any]) -> Outcome:
        """Apply one batch; RETRY_LATER means "read the whole batch again"."""
        started = time.perf_counter()
        values = [record.value for record in records]
        poison: list[Poison] = []
        if isinstance(self._decoder, WireDecoder):
            outcome = await self._claim_ahead(records, values, self._decoder, started, poison)
        else:
            events, records_by_id = self._decode(records, values, poison)
            outcome = Outcome.APPLIED
            if events:
                with cause_traces(_traces(records_by_id)):
                    outcome = await self._apply_with_retries(events, records_by_id, started, poison)
        if outcome is Outcome.RETRY_LATER or not poison:
            return outcome
        if await self._dead_letter_many(poison) is Outcome.RETRY_LATER:
            return Outcome.RETRY_LATER
        return Outcome.APPLIED

    def _decode(
        self, records: Sequence[Any], values: list[bytes | None], poison: list[Poison]
    ) -> tuple[list[Any], dict[str, Any]]:
        """The batch's valid events, each once, with their records; the records that cannot be
        decoded (whatever their decoding raises), and the events whose source is not their
        topic's owner (``unexpected_source``), are added to ``poison``."""
        event_type = self.event_type
        events: list[Any] = []
        records_by_id: dict[str, Any] = {}
        decoded: Sequence[Any]
        try:
            decoded = self._decoder.decode(values)
        except Exception as exc:  # the fast path must not stop the batch: decode_event decides
            self._log.warning(
                ("fast decode failed", event_type, type(exc)),
                "batch decoding of %s failed (%s: %s); decoding its records one by one",
                event_type,
                type(exc).__name__,
                exc,
            )
            decoded = [None] * len(values)
        for record, fast in zip(records, decoded, strict=True):
            try:
                event = fast or self._decoder.adopt(self.decode_one(record.value, event_type))
            except Exception as exc:
                reason, error = poison_reason(exc)
                poison.append((record, reason, error, 0))
                continue
            if (refused := self.refused_source(event_type, event.source)) is not None:
                poison.append((record, UNEXPECTED_SOURCE, refused, 0))
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
        poison: list[Poison],
    ) -> Outcome:
        """The first attempt at a high-volume batch, pipelined: the ids (cheap to find) are
        claimed in the inbox while the records are decoded, so that PostgreSQL inserts the
        inbox rows — the costliest step of ingestion — on the other core meanwhile. Ids claimed
        for records that turn out invalid are released in the same transaction; later attempts
        (after a handler failure) take the plain path."""
        topic, name = self.topics[0], self.inbox_name(self.event_type)
        ahead = list(dict.fromkeys(i for i in decoder.ids(values) if i is not None))
        decoded: tuple[list[Any], dict[str, Any]] | None = None
        try:
            async with self._pool().acquire() as conn, conn.transaction():
                claim = asyncio.ensure_future(inbox.claim_many(conn, name, ahead))
                try:
                    await asyncio.sleep(0)  # the INSERT leaves for PostgreSQL; decode meanwhile
                    decoded = self._decode(records, values, poison)
                finally:
                    # The connection serves one statement at a time: the claim must end first.
                    fresh = (await asyncio.gather(claim, return_exceptions=True))[0]
                if isinstance(fresh, BaseException):
                    raise fresh
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
        except INFRA_ERRORS as exc:
            return await self._back_off(topic, exc)
        except Refused as refusal:
            if decoded is None:
                raise  # not from the handler: the batch is read again
            events, records_by_id = decoded
            rest = self._refuse(refusal, events, records_by_id, poison)
            with cause_traces(_traces(records_by_id)):
                return await self._apply_with_retries(rest, records_by_id, started, poison)
        except Exception as exc:
            if decoded is None:
                raise  # not a handler failure: the batch is read again
            events, records_by_id = decoded
            self._metrics.handler_retries.labels(topic).inc()
            self._log.warning(
                ("batch handler failed", topic, type(exc)),
                "batch handler for %s failed (attempt 1): %s",
                topic,
                exc,
            )
            await asyncio.sleep(self._backoff(1))
            with cause_traces(_traces(records_by_id)):
                return await self._apply_with_retries(
                    events, records_by_id, started, poison, attempt=1
                )
        self._applied(len(events), len(new_events), started)
        return Outcome.APPLIED

    async def _apply_with_retries(
        self,
        events: list[Any],
        records_by_id: dict[str, Any],
        started: float,
        poison: list[Poison],
        attempt: int = 0,
    ) -> Outcome:
        topic, event_type, handler = self.topics[0], self.event_type, self._batch_handler
        while True:
            attempt += 1
            try:
                applied = await self._apply_batch(events, event_type, handler)
                break
            except INFRA_ERRORS as exc:
                return await self._back_off(topic, exc)
            except Refused as refusal:
                # Each refusal removes at least one event, so this ends; it is no failed attempt.
                events = self._refuse(refusal, events, records_by_id, poison)
                attempt -= 1
                continue
            except Exception as exc:
                if attempt >= self._settings.handler_max_attempts:
                    self._log.warning(
                        ("batch handler gave up", topic, type(exc)),
                        "batch handler for %s failed %d times (%s: %s); bisecting the batch",
                        topic,
                        attempt,
                        type(exc).__name__,
                        exc,
                    )
                    return await self._isolate(events, records_by_id, exc, attempt, poison)
                self._metrics.handler_retries.labels(topic).inc()
                self._log.warning(
                    ("batch handler failed", topic, type(exc)),
                    "batch handler for %s failed (attempt %d): %s",
                    topic,
                    attempt,
                    exc,
                )
                await asyncio.sleep(self._backoff(attempt))
        self._applied(len(events), applied, started)
        return Outcome.APPLIED

    @staticmethod
    def _refuse(
        refusal: Refused, events: list[Any], records_by_id: dict[str, Any], poison: list[Poison]
    ) -> list[Any]:
        """The events a handler did not refuse; the refused ones join ``poison`` (dead-lettered
        with the batch's other letters). A refusal that names none of them is a handler bug:
        raised (the batch is read again)."""
        rest = [e for e in events if e.id not in refusal.errors]
        if len(rest) == len(events):
            raise RuntimeError(f"the handler refused events not in its batch: {refusal}")
        poison.extend(
            (records_by_id[e.id], refusal.reason, refusal.errors[e.id], 1)
            for e in events
            if e.id in refusal.errors
        )
        return rest

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

    async def _isolate(
        self,
        failing: list[Any],
        records_by_id: dict[str, Any],
        error: Exception,
        attempts: int,
        poison: list[Poison],
    ) -> Outcome:
        """``failing`` failed as a whole: apply its halves, isolating again within a half that
        fails, first half first; an event that fails alone joins ``poison``. RETRY_LATER when
        the infrastructure goes away meanwhile (what was applied stays applied)."""
        topic, event_type, handler = self.topics[0], self.event_type, self._batch_handler
        if len(failing) == 1:
            record = records_by_id[failing[0].id]
            poison.append((record, "handler_failed", f"{type(error).__name__}: {error}", attempts))
            return Outcome.APPLIED
        middle = len(failing) // 2
        for half in (failing[:middle], failing[middle:]):
            while True:
                try:
                    applied = await self._apply_batch(half, event_type, handler)
                except INFRA_ERRORS as exc:
                    return await self._back_off(topic, exc)
                except Refused as refusal:
                    half = self._refuse(refusal, half, records_by_id, poison)
                    continue  # the rest of the half, without what the handler refused
                except Exception as exc:
                    outcome = await self._isolate(half, records_by_id, exc, attempts + 1, poison)
                    if outcome is Outcome.RETRY_LATER:
                        return outcome
                    break
                self._metrics.events_handled.labels(topic, Outcome.APPLIED.value).inc(applied)
                if duplicates := len(half) - applied:
                    self._metrics.events_handled.labels(topic, Outcome.DUPLICATE.value).inc(
                        duplicates
                    )
                break
        return Outcome.APPLIED

    async def on_batch_message(self, msg: Any) -> None:
        """FastStream batch entry point (``AckPolicy.MANUAL``)."""
        records = msg.raw_message
        try:
            with gc_paused():
                outcome = await self.process_batch(records)
        except Exception as exc:
            outcome = await self._unexpected(self.topics[0], exc)
        if outcome is Outcome.RETRY_LATER:
            await msg.nack()
            return
        crash_point(CONSUMER_AFTER_COMMIT)
        await self.settle(msg.consumer, records)
