"""Every Kafka client of the project is built here, with durable defaults.

One place decides the bootstrap servers and the security settings (SASL/SCRAM, TLS) of every
producer, consumer and admin client — the services, the CLI, the demo, the benchmarks and the
tests — so that no client can be forgotten when the bus's settings change (docs/security.md).
"""

from __future__ import annotations

import asyncio
import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from mlcp.runtime.settings import ConfigurationError, Settings

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
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": protocol,
    }
    if protocol.endswith("SSL"):
        options["ssl_context"] = tls_context(settings.kafka_ca_file)
    if protocol.startswith("SASL_"):
        username, password = settings.kafka_credentials()
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = username
        options["sasl_plain_password"] = password
    return options


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client TLS context that verifies the broker's certificate and host name against
    ``ca_file`` (or the system's CAs when None)."""
    return _tls_context(None if ca_file is None else str(ca_file.expanduser()))


@lru_cache(maxsize=8)
def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"MLCP_KAFKA_CA_FILE={ca_file}: not a readable PEM bundle ({exc})"
        ) from None
    return context


def faststream_security(settings: Settings) -> BaseSecurity | None:
    """The same settings as ``client_options``, in the form FastStream's broker takes."""
    protocol = settings.kafka_security_protocol
    context = tls_context(settings.kafka_ca_file) if protocol.endswith("SSL") else None
    if not protocol.startswith("SASL_"):
        return BaseSecurity(ssl_context=context) if context is not None else None
    kind = {"SCRAM-SHA-512": SASLScram512, "SCRAM-SHA-256": SASLScram256}.get(
        settings.kafka_sasl_mechanism, SASLPlaintext
    )
    try:
        username, password = settings.kafka_credentials()
    except ConfigurationError:
        # Building a service (its routes, a unit test) needs no identity; starting it does,
        # and the runtime's start checks the credentials with one clear error before the
        # broker connects (ServiceRuntime._start_producer).
        return None
    return kind(
        username=username,
        password=password,
        ssl_context=context,
        use_ssl=context is not None,
    )


def describe_principal(settings: Settings) -> str:
    """Who this process is on the bus, for error messages (never the password)."""
    if settings.kafka_security_protocol.startswith("SASL_"):
        return (
            f"principal {settings.kafka_username!r} ({settings.kafka_sasl_mechanism} over "
            f"{settings.kafka_security_protocol})"
        )
    return f"an unauthenticated client ({settings.kafka_security_protocol})"


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


class BusAccessError(ConfigurationError):
    """The brokers answer but refuse this process's credentials or certificate: retrying
    cannot help, the configuration must change."""


async def check_access(settings: Settings, *, timeout_s: float = 10.0) -> str | None:
    """Connect to the bootstrap brokers as this process would. None when one of them accepted
    the connection (TLS and authentication included); else why none did. Raises
    ``BusAccessError`` when a broker answered but refused the credentials or the TLS handshake.
    """
    from aiokafka.conn import create_conn
    from aiokafka.errors import (
        IllegalSaslStateError,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )
    from aiokafka.protocol.metadata import MetadataRequest

    options = client_options(settings)
    options.pop("bootstrap_servers")
    problem = "no bootstrap address"
    for address in settings.kafka_bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host.strip("[]"),
                    int(port),
                    client_id="mlcp-access-check",
                    request_timeout_ms=int(timeout_s * 1000),
                    **options,
                ),
                timeout_s,
            )
            try:
                # A listener that wants SASL still answers ApiVersions to a client without
                # credentials, then drops the connection at its first real request.
                await asyncio.wait_for(conn.send(MetadataRequest([], False)), timeout_s)
            except Exception:
                if not settings.kafka_security_protocol.startswith("SASL_"):
                    raise BusAccessError(
                        f"Kafka at {address} closed the connection of an unauthenticated client "
                        f"(MLCP_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}): "
                        "the bus requires SASL; set MLCP_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT "
                        "(or SASL_SSL) and the principal's credentials."
                    ) from None
                raise
            finally:
                conn.close()
            return None
        except BusAccessError:
            raise
        except (SaslAuthenticationFailed, IllegalSaslStateError) as exc:
            raise BusAccessError(
                f"Kafka at {address} refused {describe_principal(settings)}: {exc}. Check "
                "MLCP_KAFKA_USERNAME and MLCP_KAFKA_PASSWORD_FILE / MLCP_KAFKA_PASSWORD (the dev "
                f"stack prints them: mlcp-dev env {settings.kafka_username or 'PRINCIPAL'})."
            ) from None
        except UnsupportedSaslMechanismError as exc:
            raise BusAccessError(
                f"Kafka at {address} does not offer MLCP_KAFKA_SASL_MECHANISM="
                f"{settings.kafka_sasl_mechanism}: {exc}"
            ) from None
        except ssl.SSLError as exc:
            raise BusAccessError(
                f"TLS with Kafka at {address} failed ({exc.reason or exc}): check "
                "MLCP_KAFKA_CA_FILE (the CA that signed the broker's certificate) and that "
                "the address is the broker's TLS listener."
            ) from None
        except (TimeoutError, OSError, ValueError) as exc:
            problem = f"{address}: {exc or type(exc).__name__}"
        except Exception as exc:  # aiokafka's own connection errors
            problem = f"{address}: {exc!r}"
    return problem
