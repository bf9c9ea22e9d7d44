"""Dead-letter records: the original bytes and headers plus why they could not be applied."""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from mlcp.contracts import dlq_topic

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

MAX_ERROR_CHARS = 4000


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

    def record_headers(self) -> list[tuple[str, bytes]]:
        """The original headers followed by the DLQ ones."""
        extra = {
            H_REASON: self.reason,
            H_ERROR: self.error[:MAX_ERROR_CHARS],
            H_TOPIC: self.topic,
            H_PARTITION: str(self.partition),
            H_OFFSET: str(self.offset),
            H_CONSUMER: self.consumer,
            H_ATTEMPTS: str(self.attempts),
            H_TIME: str(int(time.time() * 1000)),
        }
        kept = [(k, v) for k, v in self.headers if not k.startswith("mlcp-dlq-")]
        return kept + [(k, v.encode()) for k, v in extra.items()]


async def publish_dead_letter(producer: AIOKafkaProducer, letter: DeadLetter) -> None:
    """Write ``letter`` to ``<topic>.dlq`` and wait for acks=all."""
    await producer.send_and_wait(
        dlq_topic(letter.topic),
        value=letter.value,
        key=letter.key,
        headers=letter.record_headers(),
    )
