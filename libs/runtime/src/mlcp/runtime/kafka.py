"""Every Kafka client of the project is built here, with durable defaults (DESIGN.md §5, §11).

One place decides the bootstrap servers and (soon) the security settings of every producer,
consumer and admin client — the services, the CLI, the demo, the benchmarks and the tests — so
that no client can be forgotten when the bus's settings change.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from mlcp.contracts import topic_config
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


def client_options(settings: Settings) -> dict[str, Any]:
    """Keywords every aiokafka client takes: where the brokers are and how to authenticate."""
    return {"bootstrap_servers": settings.kafka_bootstrap}


def durable_producer(settings: Settings, *, client_id: str, **overrides: Any) -> AIOKafkaProducer:
    """A producer with acks=all and idempotence (not started)."""
    options = {**DURABLE_PRODUCER_OPTIONS, **overrides}
    return AIOKafkaProducer(client_id=client_id, **client_options(settings), **options)


def make_consumer(settings: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer (not started); pass ``group_id`` only for a group the principal may use."""
    return AIOKafkaConsumer(*topics, **client_options(settings), **options)


def make_admin(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    """An admin client (not started)."""
    return AIOKafkaAdminClient(**client_options(settings), **options)


def encode_headers(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    """Kafka record headers from a str→str mapping."""
    return [(k, v.encode()) for k, v in headers.items()]


def new_topic(settings: Settings, name: str) -> NewTopic:
    """How a missing topic is created: the settings' partitions and replication, plus the
    topic-level configuration its event type needs (``mlcp.contracts.topic_config``)."""
    return NewTopic(
        name,
        settings.topic_partitions,
        settings.topic_replication_factor,
        topic_configs=topic_config(name),
    )
