"""FastStream Kafka broker and subscriber with durable defaults."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import ConsumerRebalanceListener
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.parser import AioKafkaBatchParser
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CollectorRegistry

from mlcp.runtime.kafka import DURABLE_PRODUCER_OPTIONS, faststream_security
from mlcp.runtime.settings import Settings


class _KnownTopicsFilter(logging.Filter):
    """Drops FastStream's warning that it did not create topics: the runtime did, on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Auto create topics is disabled" not in record.getMessage()


logging.getLogger("mlcp.faststream").addFilter(_KnownTopicsFilter())


def make_broker(settings: Settings, service: str, registry: CollectorRegistry) -> KafkaBroker:
    """A broker whose publisher uses acks=all + idempotence, with tracing and metrics middleware."""
    return KafkaBroker(
        settings.kafka_bootstrap,
        client_id=f"mlcp-{service}",
        security=faststream_security(settings),
        # The runtime makes sure its topics exist before subscribing (ServiceRuntime.ensure_topics,
        # `mlcp bus apply`); FastStream's own attempt would only be refused by the ACLs.
        allow_auto_create_topics=False,
        # FastStream's own handler prints colored text; route it through our formatter instead,
        # with its per-message lines at DEBUG (the runtime's metrics count messages).
        logger=logging.getLogger("mlcp.faststream"),
        log_level=logging.DEBUG,
        acks=DURABLE_PRODUCER_OPTIONS["acks"],
        enable_idempotence=DURABLE_PRODUCER_OPTIONS["enable_idempotence"],
        middlewares=[
            KafkaTelemetryMiddleware(),
            KafkaPrometheusMiddleware(registry=registry, app_name=f"mlcp-{service}"),
        ],
    )


class AssignmentTracker(ConsumerRebalanceListener):  # type: ignore[misc]
    """Remembers that the group coordinator has given this consumer its share (for /readyz).

    An instance may legitimately own no partition (more instances than partitions), so readiness
    means "joined the group and received an assignment", not "owns a partition".
    """

    def __init__(self, before_revoke: Callable[[], Awaitable[None]] | None = None) -> None:
        self.assigned = False
        self.partitions: set[Any] = set()
        self._before_revoke = before_revoke

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Commit what was settled while the partitions are still ours: fewer redeliveries.
        if self._before_revoke is not None:
            await self._before_revoke()
        self.partitions -= set(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.partitions |= set(assigned)
        self.assigned = True


async def raw_body(message: Any) -> Any:
    """FastStream decoder that leaves the bytes alone: the runtime decodes (and validates) the
    CloudEvent itself, so FastStream's JSON parse of every record would be wasted work."""
    return message.body


FETCH_BYTES_PER_PARTITION = 8 * 1024 * 1024


async def batch_parser(message: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """FastStream parser that skips its per-record work on batches.

    FastStream's batch parser decodes every record's headers into a dict, and its OpenTelemetry
    middleware then extracts baggage and trace links from each of them: ~10 % of the CPU of a
    batch of small records, for data the runtime never reads (it takes the records and the
    consumer). Here a batch is parsed like one message: the first record's headers, so the
    batch's span continues the first record's trace. Anything else goes to FastStream's parser.
    """
    parser = getattr(original, "__self__", None)
    if not (isinstance(message, tuple) and message and isinstance(parser, AioKafkaBatchParser)):
        return await original(message)
    first, last = message[0], message[-1]
    headers = {key: value.decode() for key, value in first.headers}
    return parser.msg_class(
        body=[record.value or b"" for record in message],
        headers=headers,
        reply_to=headers.get("reply_to", ""),
        content_type=headers.get("content-type"),
        message_id=f"{first.offset}-{last.offset}-{first.timestamp}",
        correlation_id=headers.get("correlation_id"),
        raw_message=message,
        consumer=parser._consumer,
    )


def durable_subscriber_options(settings: Settings, service: str) -> dict[str, Any]:
    """Subscriber keywords: one group per service, manual commits, read from the beginning."""
    return {
        "group_id": settings.group_id(service),
        "ack_policy": AckPolicy.MANUAL,
        # A new service (or a new group) must see events published before it first started.
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.consumer_session_timeout_ms,
        "heartbeat_interval_ms": settings.consumer_heartbeat_interval_ms,
        "max_poll_interval_ms": 10 * 60 * 1000,
        # A fetch brings at most this much per partition; at the 1 MiB default a batch of
        # ~1 kB predictions stopped near 1,000 records, whatever max_records asked for.
        "max_partition_fetch_bytes": FETCH_BYTES_PER_PARTITION,
        "decoder": raw_body,
        "parser": batch_parser,
    }
