"""Durable event consumption: decode → inbox → handler → outbox in one transaction → commit.

FastStream's default ``ACK_FIRST`` commits before the handler runs and its ``NACK_ON_ERROR``
re-seeks a poison record forever. Here the subscriber runs with ``AckPolicy.MANUAL`` and this
module decides, per record:

* the payload breaks the contract (invalid JSON, wrong schema, unknown type/version, too large,
  nested too deep) — or decoding it raises anything at all (a RecursionError, a MemoryError …:
  whatever the record's own bytes provoke is the record's fault) → ``<topic>.dlq`` with the
  reason, then commit: the partition keeps flowing;
* a valid event whose CloudEvents ``source`` is not its topic's owner (acls.yaml) → the DLQ too
  (``unexpected_source``), the same way;
* the handler raises → retried with exponential backoff up to ``handler_max_attempts``, then the
  DLQ with the error;
* the handler refuses the event (:class:`Refused`: bad input no retry can fix, such as a label
  that does not fit the model's declared type) → the DLQ at once, with the handler's reason;
* PostgreSQL or Kafka is unreachable (also while writing a dead letter) → not the event's fault:
  nothing goes to the DLQ; the record is re-read after a capped, jittered backoff (seek back, no
  commit) until the infrastructure returns;
* applied or already applied (inbox hit) → commit.

Repeated failures are logged once per interval with a count (``LogThrottle``), never per attempt.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from pydantic import BaseModel

from mlcp.contracts import CloudEvent, ContractError, decode_event
from mlcp.policy.acl import load_policy
from mlcp.runtime import inbox, outbox
from mlcp.runtime.backoff import backoff_s
from mlcp.runtime.db import TRANSIENT_DB_ERRORS, Conn
from mlcp.runtime.dlq import UNEXPECTED_SOURCE, DeadLetter, DeadLetterWriter, letter_fields
from mlcp.runtime.faults import CONSUMER_AFTER_COMMIT, crash_point
from mlcp.runtime.logs import LogThrottle, event_context
from mlcp.runtime.outbox import Cause
from mlcp.runtime.refusals import Refused as Refused

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, ConsumerRecord

    from mlcp.runtime.metrics import RuntimeMetrics
    from mlcp.runtime.settings import Settings

log = logging.getLogger(__name__)

INFRA_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_DB_ERRORS, KafkaError)

UNDECODABLE = "undecodable"
"""Dead-letter reason of a record whose decoding raised something other than a ContractError."""


def poison_reason(exc: Exception) -> tuple[str, str]:
    """(reason, error) of a record whose decoding raised ``exc``: always the record's fault."""
    if isinstance(exc, ContractError):
        return exc.reason, str(exc)
    return UNDECODABLE, f"{type(exc).__name__} while decoding: {exc}"


Poison = tuple[Any, str, str, int]
"""(record, reason, error, attempts) of a record to dead-letter."""


class Tx:
    """What a handler gets besides the event: its open transaction and a way to emit events."""

    def __init__(
        self,
        conn: Conn,
        *,
        service: str,
        settings: Settings,
        cause: CloudEvent[Any] | None = None,
        correlationid: str | None = None,
    ) -> None:
        self.conn = conn
        self.cause = cause
        self._correlationid = correlationid
        self._service = service
        self._schema = settings.db_schema or service
        self._settings = settings
        self.emitted: list[CloudEvent[Any]] = []

    async def emit(
        self,
        data: BaseModel,
        *,
        subject: str | None = None,
        cause: Cause | None = None,
        correlationid: str | None = None,
    ) -> CloudEvent[Any]:
        """Write an event to the outbox; it is published only if the transaction commits.

        ``cause`` / ``correlationid`` override the defaults (the event being handled): a batch
        handler names which event of its batch caused a decision, a service that keeps a
        lifecycle's correlation id in its state passes it on.
        """
        event = outbox.new_outgoing(
            data,
            service=self._service,
            cause=cause or self.cause,
            subject=subject,
            correlationid=correlationid or self._correlationid,
        )
        await outbox.enqueue(self.conn, self._schema, event, topic=self._settings.topic(event.type))
        self.emitted.append(event)
        return event

    async def emit_many(
        self, items: Sequence[tuple[BaseModel, CloudEvent[Any] | None]]
    ) -> list[CloudEvent[Any]]:
        """``emit`` for many ``(data, cause)`` pairs, in this order, in one round trip (a batch
        handler that decided several events)."""
        events = [
            outbox.new_outgoing(
                data,
                service=self._service,
                cause=cause or self.cause,
                correlationid=self._correlationid,
            )
            for data, cause in items
        ]
        topics = [(event, self._settings.topic(event.type)) for event in events]
        await outbox.enqueue_many(self.conn, self._schema, topics)
        self.emitted.extend(events)
        return events


Handler = Callable[[CloudEvent[Any], Tx], Awaitable[None]]


class Outcome(enum.Enum):
    """What became of one record."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"
    RETRY_LATER = "retry_later"  # infrastructure away: do not commit, read it again


class DurableConsumer:
    """Applies records of one service's topics through their handlers, exactly once in effect."""

    def __init__(
        self,
        *,
        service: str,
        settings: Settings,
        metrics: RuntimeMetrics,
        pool: Callable[[], asyncpg.Pool],
        dead_letters: DeadLetterWriter | None = None,
        wake_relay: Callable[[], None] | None = None,
    ) -> None:
        self._service = service
        self._settings = settings
        self._metrics = metrics
        self._pool = pool
        self._dead_letters = dead_letters or DeadLetterWriter(
            service=service, settings=settings, pool=pool
        )
        self._log = LogThrottle(log)
        # Called after a transaction that emitted commits: the outbox relay publishes at once.
        self._wake_relay = wake_relay
        self._handlers: dict[str, tuple[str, Handler]] = {}
        self._policy = load_policy(settings.acl_file)
        self._infra_failures = 0
        self._kafka_consumer: AIOKafkaConsumer | None = None
        self._settled: dict[TopicPartition, int] = {}
        self._unsettled_commits = 0
        self._last_commit = time.monotonic()
        self._commit_lock = asyncio.Lock()

    def add(self, event_type: str, handler: Handler) -> None:
        """Route ``event_type`` (read from its topic) to ``handler``."""
        topic = self._settings.topic(event_type)
        if topic in self._handlers:
            raise ValueError(f"{self._service}: two handlers for {event_type}")
        self._handlers[topic] = (event_type, handler)

    @property
    def topics(self) -> list[str]:
        return list(self._handlers)

    def refused_source(self, event_type: str, source: str) -> str | None:
        """Why an event of ``event_type`` from ``source`` is refused (None: accepted). The ACL
        file names each topic's owner; the broker lets only that principal write the topic,
        and this check stands behind it (a misconfigured ACL, a shared principal)."""
        allowed = self._policy.allowed_sources(event_type)
        if allowed is None or source in allowed:
            return None
        owners = ", ".join(sorted(allowed))
        return f"source {source[:200]!r} may not emit {event_type} (allowed: {owners})"

    def inbox_name(self, event_type: str) -> str:
        """The inbox's consumer name: stable across handler renames."""
        return f"{self._service}:{event_type}"

    async def process(self, record: ConsumerRecord[bytes, bytes]) -> Outcome:
        """Decide and apply one record; never raises for a bad record or a failing handler."""
        topic = record.topic
        event_type, handler = self._handlers[topic]
        started = time.perf_counter()
        try:
            event = self.decode_one(record.value, event_type)
        except Exception as exc:
            reason, error = poison_reason(exc)
            return await self._dead_letter(record, reason, error, attempts=0)
        if (refused := self.refused_source(event_type, event.source)) is not None:
            return await self._dead_letter(record, UNEXPECTED_SOURCE, refused, attempts=0)

        attempt = 0
        with event_context(event.id, event.correlationid):
            while True:
                attempt += 1
                try:
                    applied = await self._apply(event, event_type, handler)
                except INFRA_ERRORS as exc:
                    return await self._back_off(topic, exc)
                except Refused as refusal:
                    error = refusal.errors.get(event.id, str(refusal))
                    return await self._dead_letter(record, refusal.reason, error, attempt)
                except Exception as exc:
                    if attempt >= self._settings.handler_max_attempts:
                        self._log.error(
                            ("handler gave up", topic, type(exc)),
                            "handler for %s failed %d times; dead-lettering",
                            topic,
                            attempt,
                            exc_info=exc,
                        )
                        error = f"{type(exc).__name__}: {exc}"
                        return await self._dead_letter(record, "handler_failed", error, attempt)
                    self._metrics.handler_retries.labels(topic).inc()
                    self._log.warning(
                        ("handler failed", topic, type(exc)),
                        "handler for %s failed (attempt %d): %s",
                        topic,
                        attempt,
                        exc,
                    )
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                self._infra_failures = 0
                self._metrics.handler_seconds.labels(topic).observe(time.perf_counter() - started)
                outcome = Outcome.APPLIED if applied else Outcome.DUPLICATE
                self._metrics.events_handled.labels(topic, outcome.value).inc()
                return outcome

    def decode_one(self, value: bytes | None, event_type: str) -> CloudEvent[Any]:
        """``decode_event`` with this process's limits (MLCP_MAX_RECORD_BYTES, _JSON_DEPTH)."""
        return decode_event(
            value or b"",
            expected_type=event_type,
            max_bytes=self._settings.max_record_bytes,
            max_depth=self._settings.max_json_depth,
        )

    async def _apply(self, event: CloudEvent[Any], event_type: str, handler: Handler) -> bool:
        async with self._pool().acquire() as conn, conn.transaction():
            if not await inbox.claim(conn, self.inbox_name(event_type), event.id, event.type):
                return False
            tx = Tx(conn, service=self._service, settings=self._settings, cause=event)
            await handler(event, tx)
        self.committed(tx)
        return True

    def committed(self, tx: Tx) -> None:
        """``tx`` has committed: wake the relay if it emitted anything."""
        if tx.emitted and self._wake_relay is not None:
            self._wake_relay()

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: str, error: str, attempts: int
    ) -> Outcome:
        return await self._dead_letter_many([(record, reason, error, attempts)])

    async def _dead_letter_many(self, poison: Sequence[Poison]) -> Outcome:
        """Dead-letter records (each once, whatever retries came before); RETRY_LATER when the
        letters cannot be written now (Kafka or PostgreSQL away): none is then settled."""
        letters = [
            DeadLetter(
                **letter_fields(record),
                consumer=self._service,
                reason=reason,
                error=error,
                attempts=attempts,
            )
            for record, reason, error, attempts in poison
        ]
        try:
            written = await self._dead_letters.write(letters)
        except INFRA_ERRORS as exc:
            return await self._back_off(dlq_topics_of(letters), exc)
        for letter in written:
            self._log.error(
                ("dead-lettered", letter.topic, letter.reason),
                "dead-lettered %s[%d]@%d: %s: %s",
                letter.topic,
                letter.partition,
                letter.offset,
                letter.reason,
                letter.error[:500],
            )
            self._metrics.dead_lettered.labels(letter.topic, letter.reason).inc()
            self._metrics.events_handled.labels(letter.topic, Outcome.DEAD_LETTERED.value).inc()
        return Outcome.DEAD_LETTERED

    async def _back_off(self, topic: str, exc: BaseException) -> Outcome:
        self._infra_failures += 1
        delay = self._backoff(self._infra_failures)
        self._log.warning(
            ("infrastructure", topic, type(exc)),
            "infrastructure unavailable on %s (%s: %s); retry in %.1fs",
            topic,
            type(exc).__name__,
            exc,
            delay,
        )
        await asyncio.sleep(delay)
        return Outcome.RETRY_LATER

    def _backoff(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``: doubling from MLCP_RETRY_INITIAL_BACKOFF_S up
        to MLCP_RETRY_MAX_BACKOFF_S, with equal jitter (``mlcp.runtime.backoff``) so that the
        instances that lost the same database do not come back in lockstep."""
        s = self._settings
        return backoff_s(
            attempt, initial_s=s.retry_initial_backoff_s, maximum_s=s.retry_max_backoff_s
        )

    async def on_message(self, msg: Any) -> None:
        """FastStream entry point (``AckPolicy.MANUAL``): commit only what was settled."""
        record = msg.raw_message
        try:
            outcome = await self.process(record)
        except Exception as exc:
            outcome = await self._unexpected(record.topic, exc)
        if outcome is Outcome.RETRY_LATER:
            await msg.nack()  # seek back to this record: it is read again, nothing is committed
            return
        crash_point(CONSUMER_AFTER_COMMIT)
        await self.settle(msg.consumer, [record])

    async def _unexpected(self, topic: str, exc: Exception) -> Outcome:
        """An error outside decoding and the handler (a bug of the runtime, a PostgreSQL error
        that is not a connection's): read the record again, after a backoff, logged with its
        traceback once per interval."""
        self._infra_failures += 1
        self._log.error(
            ("unexpected", topic, type(exc)),
            "unexpected error while processing %s; the record will be read again",
            topic,
            exc_info=exc,
        )
        await asyncio.sleep(self._backoff(self._infra_failures))
        return Outcome.RETRY_LATER

    async def settle(self, consumer: AIOKafkaConsumer, records: Sequence[Any]) -> None:
        """Mark ``records`` as done; commit now if enough have gathered."""
        self._kafka_consumer = consumer
        highest: dict[tuple[str, int], int] = {}
        for record in records:  # a batch has thousands: the cheapest loop that finds the highest
            key = (record.topic, record.partition)
            if record.offset >= highest.get(key, -1):
                highest[key] = record.offset
        for (topic, partition), offset in highest.items():
            tp = TopicPartition(topic, partition)
            self._settled[tp] = max(self._settled.get(tp, 0), offset + 1)
        self._unsettled_commits += len(records)
        if (
            self._unsettled_commits >= self._settings.consumer_commit_every
            or time.monotonic() - self._last_commit >= self._settings.consumer_commit_interval_s
        ):
            await self.commit()

    async def commit(self) -> None:
        """Commit the offsets of every settled record (never one that is still being handled).

        Commits are grouped (every ``consumer_commit_every`` records or
        ``consumer_commit_interval_s``, and by ``run_commit_timer`` when the topic goes quiet)
        because a Kafka offset commit costs more than the handler's transaction. A crash before a
        commit makes Kafka redeliver up to that many records, which the inbox drops.
        """
        async with self._commit_lock:
            consumer = self._kafka_consumer
            if consumer is None or not self._settled:
                return
            owned = consumer.assignment()
            offsets = {tp: off for tp, off in self._settled.items() if tp in owned}
            self._settled.clear()
            self._unsettled_commits = 0
            self._last_commit = time.monotonic()
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except (KafkaError, AssertionError) as exc:
                # A rebalance can refuse the commit; the next owner re-reads and the inbox drops it.
                self._log.warning(
                    ("commit failed", type(exc)),
                    "offset commit failed (%s); records may be redelivered",
                    exc,
                )

    async def run_commit_timer(self) -> None:
        """Commit settled offsets when no new record arrives to trigger it."""
        while True:
            await asyncio.sleep(self._settings.consumer_commit_interval_s)
            if self._unsettled_commits:
                await self.commit()


def dlq_topics_of(letters: Sequence[DeadLetter]) -> str:
    """The source topics of ``letters``, for a log line."""
    return ", ".join(sorted({letter.topic for letter in letters}))
