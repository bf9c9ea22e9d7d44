"""Where the client finds the registry, the bus and the artifacts: the ``MLCP_*`` variables.

The same names as the services (docs/serving.md lists them), read here without the services'
runtime so that an inference service installs only this library.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class ClientConfigurationError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class ClientSettings:
    """Everything the client connects to. ``from_env()`` reads the ``MLCP_*`` variables."""

    registry_url: str = "http://127.0.0.1:8081"
    """``MLCP_REGISTRY_URL``."""
    token: str | None = field(default=None, repr=False)
    """``MLCP_TOKEN``: a registry token with the viewer role on the model."""
    kafka_bootstrap: str = "127.0.0.1:9092"
    """``MLCP_KAFKA_BOOTSTRAP``."""
    kafka_security_protocol: str = "SASL_PLAINTEXT"
    """``MLCP_KAFKA_SECURITY_PROTOCOL``: the bus is authenticated by default."""
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    """``MLCP_KAFKA_SASL_MECHANISM``."""
    kafka_username: str | None = "inference"
    """``MLCP_KAFKA_USERNAME`` (default ``inference``, the principal of inference services)."""
    kafka_password: str | None = field(default=None, repr=False)
    """``MLCP_KAFKA_PASSWORD`` (prefer ``MLCP_KAFKA_PASSWORD_FILE``)."""
    kafka_password_file: Path | None = None
    """``MLCP_KAFKA_PASSWORD_FILE``: a file whose first line is the password."""
    kafka_ca_file: Path | None = None
    """``MLCP_KAFKA_CA_FILE``: PEM CAs that sign the brokers' certificates (``SASL_SSL``)."""
    topic_prefix: str = ""
    """``MLCP_TOPIC_PREFIX``: the bus's tenant prefix, if any."""
    artifact_root: str = "~/.local/share/mlcp/artifacts"
    """``MLCP_ARTIFACT_ROOT``: a path or ``file://`` URI (another store plugs in by scheme)."""

    def __post_init__(self) -> None:
        if self.kafka_security_protocol not in PROTOCOLS:
            raise ClientConfigurationError(
                f"MLCP_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol!r}: one of "
                f"{', '.join(PROTOCOLS)}"
            )
        if self.kafka_sasl_mechanism not in MECHANISMS:
            raise ClientConfigurationError(
                f"MLCP_KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism!r}: one of "
                f"{', '.join(MECHANISMS)}"
            )
        if not re.fullmatch(r"[a-zA-Z0-9._-]*", self.topic_prefix):
            raise ClientConfigurationError(f"MLCP_TOPIC_PREFIX={self.topic_prefix!r} is invalid")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ClientSettings:
        """Settings from ``MLCP_*`` variables (``environ`` or the process's), then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        names = {
            "registry_url": "MLCP_REGISTRY_URL",
            "token": "MLCP_TOKEN",
            "kafka_bootstrap": "MLCP_KAFKA_BOOTSTRAP",
            "kafka_security_protocol": "MLCP_KAFKA_SECURITY_PROTOCOL",
            "kafka_sasl_mechanism": "MLCP_KAFKA_SASL_MECHANISM",
            "kafka_username": "MLCP_KAFKA_USERNAME",
            "kafka_password": "MLCP_KAFKA_PASSWORD",
            "kafka_password_file": "MLCP_KAFKA_PASSWORD_FILE",
            "kafka_ca_file": "MLCP_KAFKA_CA_FILE",
            "topic_prefix": "MLCP_TOPIC_PREFIX",
            "artifact_root": "MLCP_ARTIFACT_ROOT",
        }
        for attribute, variable in names.items():
            raw = env.get(variable, "").strip()
            if raw:
                values[attribute] = Path(raw) if attribute.endswith("_file") else raw
        return replace(cls(**values), **overrides)

    def topic(self, event_type: str) -> str:
        """The Kafka topic of ``event_type`` behind the tenant prefix."""
        return f"{self.topic_prefix}{event_type}"

    def kafka_credentials(self) -> tuple[str, str]:
        """(username, password) for SASL; ``ClientConfigurationError`` naming what is missing."""
        if not self.kafka_username:
            raise ClientConfigurationError(
                "MLCP_KAFKA_USERNAME is required with SASL (the bus principal, e.g. inference)"
            )
        if self.kafka_password is not None:
            return self.kafka_username, self.kafka_password
        if self.kafka_password_file is None:
            raise ClientConfigurationError(
                f"MLCP_KAFKA_PASSWORD_FILE or MLCP_KAFKA_PASSWORD is required for bus principal "
                f"{self.kafka_username!r}"
            )
        try:
            lines = self.kafka_password_file.expanduser().read_text().splitlines()
        except OSError as exc:
            raise ClientConfigurationError(
                f"MLCP_KAFKA_PASSWORD_FILE={self.kafka_password_file}: {exc.strerror}"
            ) from None
        if not lines or not lines[0]:
            raise ClientConfigurationError(
                f"MLCP_KAFKA_PASSWORD_FILE={self.kafka_password_file} is empty"
            )
        return self.kafka_username, lines[0]
