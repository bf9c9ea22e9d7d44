"""Dead letters: the original record plus why it could not be applied — always accepted by the
dead-letter topic, written once per source record.

Two things used to make a dead letter impossible to write, and the partition behind it stuck:
* **Size.** A record the broker accepted compressed (a 2 MiB JSON gzips to kilobytes) is copied
  to the DLQ uncompressed: over the producer's ``max_request_size`` or the topic's
  ``max.message.bytes``. A letter that would not fit is written *truncated*: every header the
  DLQ adds (reason, error, origin), the original's SHA-256 and size, the original headers (up
  to :data:`HEADERS_BUDGET_BYTES`) and the first :data:`PREFIX_BYTES` of its bytes. Where the
  original still is (topic, partition, offset) is in the headers; nothing needs it to go on.
  The limit is each DLQ topic's own ``max.message.bytes``, read from the broker at start
  (Kafka's default when it cannot be read). A broker refusal must never happen: after one, an
  idempotent producer cannot write to that partition again (``OutOfOrderSequenceNumber``) —
  so letters have a producer of their own, restarted (with a halved limit) if it ever does.
* **Repetition.** A letter whose record is read again (a retry after an outage, a rebalance,
  a restart) must not be written again. The source record's position is claimed in the
  service's batch inbox in the transaction that waits for the letter's ``acks=all``; a claim
  that exists means "already written". Only a crash between the broker's ack and the commit
  can write a letter twice (like the outbox relay's window).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError, MessageSizeTooLargeError, OutOfOrderSequenceNumber
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from mlcp.contracts import dlq_topic
from mlcp.runtime import inbox
from mlcp.runtime.kafka import DURABLE_PRODUCER_OPTIONS, durable_producer
from mlcp.runtime.telemetry import (
    end_producer_span,
    producer_span,
    record_landed,
    start_producer_span,
)

if TYPE_CHECKING:
    import asyncpg
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    from mlcp.runtime.settings import Settings

log = logging.getLogger(__name__)

# Header names added to a dead-lettered record; the original headers are kept beside them.
H_REASON = "mlcp-dlq-reason"
UNEXPECTED_SOURCE = "unexpected_source"
"""Reason of a valid event whose CloudEvents ``source`` is not its topic's owner (acls.yaml)."""
H_ERROR = "mlcp-dlq-error"
H_TOPIC = "mlcp-dlq-topic"
H_PARTITION = "mlcp-dlq-partition"
H_OFFSET = "mlcp-dlq-offset"
H_CONSUMER = "mlcp-dlq-consumer"
H_ATTEMPTS = "mlcp-dlq-attempts"
H_TIME = "mlcp-dlq-time-ms"
H_SHA256 = "mlcp-dlq-sha256"
"""Hex SHA-256 of the original value (of b"" for a null value)."""
H_VALUE_BYTES = "mlcp-dlq-value-bytes"
"""Size of the original value."""
H_TRUNCATED = "mlcp-dlq-truncated"
"""Only on a truncated letter: how many bytes of the original value it keeps (a prefix)."""
H_HEADERS_DROPPED = "mlcp-dlq-headers-dropped"
"""Only on a truncated letter that could not keep every original header: how many it left out."""

MAX_ERROR_CHARS = 4000
PREFIX_BYTES = 64 * 1024
"""Bytes of the original value a truncated letter keeps: enough to see what it was."""
KEY_PREFIX_BYTES = 1024
HEADERS_BUDGET_BYTES = 64 * 1024
"""Original headers a truncated letter keeps, in order, up to this many bytes."""
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
"""Kafka's default ``message.max.bytes`` (a topic's ``max.message.bytes`` unless set)."""
MIN_LETTER_BYTES = 16 * 1024
"""A letter limit is never lowered below this (a truncated letter fits in far less)."""
LETTERS_INBOX = "dead-letters"
"""Inbox name suffix under which a service claims the records it dead-lettered."""


def letter_size(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> int:
    """Bytes of a record batch holding only this record, as the producer and broker count them."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


@dataclass(frozen=True)
class Fitted:
    """A letter as written: the whole original, or a truncated copy that fits the limit."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    truncated: bool


@dataclass(frozen=True)
class DeadLetter:
    """Why a record left the normal flow."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    consumer: str
    reason: str
    error: str
    attempts: int
    timestamp: int = -1
    """The source record's timestamp: with the offset it tells a recreated topic's records apart."""

    @property
    def position(self) -> str:
        """Where the source record is: the key its letter is written once under."""
        return f"{self.topic}/{self.partition}@{self.offset}/{self.timestamp}"

    def _dlq_headers(self) -> list[tuple[str, bytes]]:
        value = self.value or b""
        extra = {
            H_REASON: self.reason,
            H_ERROR: self.error[:MAX_ERROR_CHARS],
            H_TOPIC: self.topic,
            H_PARTITION: str(self.partition),
            H_OFFSET: str(self.offset),
            H_CONSUMER: self.consumer,
            H_ATTEMPTS: str(self.attempts),
            H_TIME: str(int(time.time() * 1000)),
            H_SHA256: hashlib.sha256(value).hexdigest(),
            H_VALUE_BYTES: str(len(value)),
        }
        return [(k, v.encode()) for k, v in extra.items()]

    def _original_headers(self) -> list[tuple[str, bytes]]:
        # A record replayed from a DLQ carries the previous failure's headers: not kept.
        return [(k, v) for k, v in self.headers if not k.startswith("mlcp-dlq-")]

    def record_headers(self) -> list[tuple[str, bytes]]:
        """The original headers followed by the DLQ ones."""
        return self._original_headers() + self._dlq_headers()

    def fitted(self, limit: int) -> Fitted:
        """The letter as one record of at most ``limit`` bytes: whole if it fits, else truncated
        (original headers up to HEADERS_BUDGET_BYTES, key and value cut to a prefix)."""
        own = self._dlq_headers()
        originals = self._original_headers()
        if letter_size(self.key, self.value, originals + own) <= limit:
            return Fitted(self.key, self.value, originals + own, truncated=False)
        kept: list[tuple[str, bytes]] = []
        budget = HEADERS_BUDGET_BYTES
        for name, raw in originals:
            cost = len(name.encode()) + len(raw or b"")
            if cost <= budget:
                kept.append((name, raw))
                budget -= cost
        key = self.key[:KEY_PREFIX_BYTES] if self.key is not None else None
        value = self.value or b""
        placeholder = [(H_TRUNCATED, b"9999999")]  # the widest count the header will carry
        for headers in (kept, []):  # headers so large that no value fits: the DLQ's own only
            marks = []
            if len(headers) < len(originals):
                marks = [(H_HEADERS_DROPPED, str(len(originals) - len(headers)).encode())]
            # 8: the record's length varints grow with its value (3 bytes each at 64 KiB).
            room = limit - letter_size(key, b"", headers + own + marks + placeholder) - 8
            if room >= 0:
                break
        cut = max(0, min(PREFIX_BYTES, len(value), room))
        final = headers + own + marks + [(H_TRUNCATED, str(cut).encode())]
        return Fitted(key, value[:cut], final, truncated=True)


async def publish_dead_letter(
    producer: AIOKafkaProducer, letter: DeadLetter, *, limit: int | None = None
) -> Fitted:
    """Write ``letter`` to ``<topic>.dlq`` (truncated if over ``limit``; default: Kafka's
    default message size) and wait for acks=all, under a PRODUCER span."""
    fitted = letter.fitted(limit or default_letter_limit())
    topic = dlq_topic(letter.topic)
    with producer_span(topic, key=fitted.key, size=len(fitted.value or b"")) as span:
        span.set_attribute("mlcp.dlq.reason", letter.reason)
        landed = await producer.send_and_wait(
            topic, value=fitted.value, key=fitted.key, headers=fitted.headers
        )
        record_landed(span, landed)
    return fitted


def default_letter_limit(topic_limit: int = KAFKA_DEFAULT_MAX_MESSAGE_BYTES) -> int:
    """The largest letter for a topic of ``topic_limit`` bytes (``max.message.bytes``) that the
    producer also sends (its ``max_request_size``)."""
    producer_limit = int(DURABLE_PRODUCER_OPTIONS["max_request_size"])
    return max(MIN_LETTER_BYTES, min(topic_limit, producer_limit))


async def read_letter_limits(admin: AIOKafkaAdminClient, topics: Iterable[str]) -> dict[str, int]:
    """Each existing topic's ``max.message.bytes`` (effective: its own or the broker's)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    names = list(topics)
    if not names:
        return {}
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, configs={"max.message.bytes": None})
        for name in names
    ]
    limits: dict[str, int] = {}
    for response in await admin.describe_configs(resources):
        for error_code, _, _, name, entries in response.resources:
            if error_code:
                continue
            for entry in entries:
                if entry[0] == "max.message.bytes":
                    limits[name] = int(entry[1])
    return limits


class DeadLetterWriter:
    """Writes a service's dead letters: each fits its topic, each source record once.

    Raises KafkaError or a PostgreSQL error when a letter cannot be written now: the caller
    treats that as infrastructure (back off, read the record again), never as the record's fault.
    """

    def __init__(
        self, *, service: str, settings: Settings, pool: Callable[[], asyncpg.Pool]
    ) -> None:
        self._service = service
        self._settings = settings
        self._pool = pool
        self._limits: dict[str, int] = {}
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    @property
    def inbox_name(self) -> str:
        return f"{self._service}:{LETTERS_INBOX}"

    def limit(self, dlq: str) -> int:
        """The largest letter written to the DLQ topic ``dlq``."""
        return self._limits.get(dlq) or default_letter_limit()

    async def learn_limits(self, admin: AIOKafkaAdminClient, dlq_topics: Iterable[str]) -> None:
        """Read the DLQ topics' ``max.message.bytes`` (at start, once the topics exist).

        Unreadable (an old broker, no DescribeConfigs permission) → Kafka's default, with a
        warning: a topic configured smaller would then refuse big letters."""
        names = list(dlq_topics)
        try:
            found = await read_letter_limits(admin, names)
        except (KafkaError, OSError, TimeoutError, ValueError) as exc:
            log.warning(
                "could not read the DLQ topics' max.message.bytes (%s: %s); dead letters are "
                "kept under Kafka's default %d bytes",
                type(exc).__name__,
                exc,
                KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
            )
            return
        for name, topic_limit in found.items():
            self._limits[name] = default_letter_limit(topic_limit)
        if unread := [name for name in names if name not in found]:
            log.warning(
                "could not read the max.message.bytes of %s (no DESCRIBE_CONFIGS on them? "
                "`mlcp bus apply` grants it); their dead letters are kept under Kafka's "
                "default %d bytes",
                ", ".join(unread),
                KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
            )

    async def write(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
        """Write the letters not written before, in one transaction; returns those written now.

        Their positions are claimed first and committed only once every letter is acknowledged,
        so a failure (raised) leaves nothing claimed and the next attempt writes them all."""
        if not letters:
            return []
        async with self._pool().acquire() as conn, conn.transaction():
            fresh = await inbox.claim_many(
                conn, self.inbox_name, list(dict.fromkeys(letter.position for letter in letters))
            )
            new = list({lt.position: lt for lt in letters if lt.position in fresh}.values())
            await self._send(new)
        return new

    async def _send(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        producer = await self._started()
        topics = {dlq_topic(letter.topic) for letter in letters}
        spans = []  # one PRODUCER span per letter, ended when its ack (or failure) is known
        try:
            acks = []
            for letter in letters:
                dlq = dlq_topic(letter.topic)
                fitted = letter.fitted(self.limit(dlq))
                span = start_producer_span(dlq, key=fitted.key, size=len(fitted.value or b""))
                span.set_attribute("mlcp.dlq.reason", letter.reason)
                spans.append(span)
                acks.append(
                    await producer.send(
                        dlq, value=fitted.value, key=fitted.key, headers=fitted.headers
                    )
                )
            landed = await asyncio.gather(*acks)
        except BaseException as exc:
            for span in spans:
                end_producer_span(span, error=exc)
            if isinstance(exc, (MessageSizeTooLargeError, OutOfOrderSequenceNumber)):
                # The topic's limit is lower than was read (changed since the start): the
                # broker refused a letter, and this producer can no longer write to that
                # partition.
                for dlq in topics:
                    self._limits[dlq] = max(MIN_LETTER_BYTES, self.limit(dlq) // 2)
                await self.close()
            raise
        for span, metadata in zip(spans, landed, strict=True):
            end_producer_span(span, partition=metadata.partition, offset=metadata.offset)

    async def _started(self) -> AIOKafkaProducer:
        # Started on the first letter: most processes never write one.
        async with self._starting:
            if self._producer is None:
                producer = durable_producer(self._settings, client_id=f"mlcp-{self._service}-dlq")
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def close(self) -> None:
        """Stop the letters' producer (started again by the next letter)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception:  # a broken producer must not stop the caller
                log.warning("stopping the dead-letter producer failed", exc_info=True)


def letter_fields(record: Any) -> dict[str, Any]:
    """The ``DeadLetter`` fields that come from an aiokafka ``ConsumerRecord``."""
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key,
        "value": record.value,
        "headers": list(record.headers or ()),
        "timestamp": record.timestamp,
    }
