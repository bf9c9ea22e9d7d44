"""Kafka clients with durable defaults (DESIGN.md §5, §11)."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer

from mlcp.runtime.settings import Settings

# aiokafka and FastStream default to acks=1 without idempotence: a leader failover can then lose
# an acknowledged record or write a retried one twice. Every mlcp producer uses these.
DURABLE_PRODUCER_OPTIONS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 1,
    "request_timeout_ms": 30_000,
    "max_request_size": 2 * 1024 * 1024,
}


def durable_producer(settings: Settings, *, client_id: str) -> AIOKafkaProducer:
    """A producer with acks=all and idempotence (not started)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, client_id=client_id, **DURABLE_PRODUCER_OPTIONS
    )


def encode_headers(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    """Kafka record headers from a str→str mapping."""
    return [(k, v.encode()) for k, v in headers.items()]
