"""The client's Kafka clients: SASL/SCRAM and TLS from ``ClientSettings``, durable producers.

An inference service does not install the services' runtime, so the client builds its aiokafka
clients here, with the same settings and the same durable defaults as the services.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from mlcp.client.settings import ClientConfigurationError, ClientSettings

DURABLE_PRODUCER_OPTIONS: dict[str, Any] = {
    # aiokafka defaults to acks=1 without idempotence: a leader failover could lose an
    # acknowledged batch or write a retried one twice.
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 5,
    "request_timeout_ms": 30_000,
    "max_request_size": 2 * 1024 * 1024,
}


def client_options(settings: ClientSettings) -> dict[str, Any]:
    """Keywords every aiokafka client takes: the brokers and how to authenticate."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": protocol,
    }
    if protocol.endswith("SSL"):
        ca = settings.kafka_ca_file
        try:
            options["ssl_context"] = create_ssl_context(
                cafile=None if ca is None else str(ca.expanduser())
            )
        except OSError as exc:
            raise ClientConfigurationError(
                f"MLCP_KAFKA_CA_FILE={ca}: not a readable PEM bundle ({exc})"
            ) from None
    if protocol.startswith("SASL_"):
        username, password = settings.kafka_credentials()
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = username
        options["sasl_plain_password"] = password
    return options


def make_producer(
    settings: ClientSettings, *, client_id: str, **overrides: Any
) -> AIOKafkaProducer:
    """A producer with acks=all and idempotence (not started)."""
    options = {**DURABLE_PRODUCER_OPTIONS, **overrides}
    return AIOKafkaProducer(client_id=client_id, **client_options(settings), **options)


def make_reader(settings: ClientSettings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer without a group (the ``inference`` principal has none), from the end."""
    options = {
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "latest",
    } | options
    return AIOKafkaConsumer(*topics, **client_options(settings), **options)
