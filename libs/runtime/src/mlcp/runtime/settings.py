"""Process settings shared by every mlcp service.

Every name is read from the environment with the ``MLCP_`` prefix, so the same variable means the
same thing in every service, the CLI, docker-compose and the tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlcp.artifacts import ArtifactLimits
from mlcp.contracts import MAX_EVENT_BYTES, MAX_JSON_DEPTH
from mlcp.policy.errors import ConfigurationError as ConfigurationError

DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_DATABASE_URL = "postgresql://mlcp:mlcp@127.0.0.1:55432/mlcp"

KafkaSecurityProtocol = Literal["SASL_PLAINTEXT", "SASL_SSL", "SSL", "PLAINTEXT"]
KafkaSaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


class Settings(BaseSettings):
    """Environment configuration of one mlcp process."""

    model_config = SettingsConfigDict(
        env_prefix="MLCP_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    kafka_bootstrap: str = Field(DEFAULT_KAFKA_BOOTSTRAP, min_length=1)
    database_url: str = Field(DEFAULT_DATABASE_URL, min_length=1)
    config: Path | None = None
    registry_url: str = "http://127.0.0.1:8081"
    # Read by no service code (the notifier resolves each channel's `url_env` itself): declared
    # so that the example channels' variables are known MLCP_* names, secret in every repr.
    slack_webhook_url: SecretStr | None = None
    wecom_webhook_url: SecretStr | None = None
    artifact_root: Path = Path("~/.local/share/mlcp/artifacts")

    # The bus is authenticated by default (docs/security.md): SASL/SCRAM-SHA-512, with TLS when
    # the protocol is SASL_SSL. PLAINTEXT is only for clusters that have no authentication.
    kafka_security_protocol: KafkaSecurityProtocol = "SASL_PLAINTEXT"
    kafka_sasl_mechanism: KafkaSaslMechanism = "SCRAM-SHA-512"
    kafka_username: str | None = Field(None, min_length=1, max_length=256)
    kafka_password: SecretStr | None = None
    kafka_password_file: Path | None = None
    """A file holding the password (its first line): keeps the secret out of the environment."""
    acl_file: Path | None = None
    """The bus's ACL file (default: the one that ships with mlcp): which source owns each topic."""
    kafka_ca_file: Path | None = None
    """PEM bundle of the CAs that may sign the brokers' certificates (SASL_SSL / SSL)."""

    # HTTP listener of the service (README.md, Configuration).
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(None, ge=0, le=65535)  # None: the service default; 0: any free
    topic_prefix: str = Field("", pattern=r"^[a-zA-Z0-9._-]*$")
    db_schema: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    """Overrides the service's PostgreSQL schema (default: the service name); for tests/tenants."""
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: str = Field("json", pattern=r"^(json|text)$")
    handler_max_attempts: int = Field(5, ge=1, le=100)
    retry_initial_backoff_s: float = Field(0.2, gt=0, le=60)
    retry_max_backoff_s: float = Field(5.0, gt=0, le=600)
    topic_partitions: int = Field(3, ge=1, le=1000)
    # For topics a service creates because they are missing: 1 suits the single-node dev
    # stack; production sets 3 (with min.insync.replicas=2) or pre-creates the topics.
    topic_replication_factor: int = Field(1, ge=1, le=7)
    outbox_batch_size: int = Field(200, ge=1, le=10_000)
    outbox_poll_interval_s: float = Field(1.0, gt=0, le=60)
    outbox_retention_days: int = Field(7, ge=0)
    inbox_retention_days: int = Field(7, ge=1)
    """Days applied event ids are remembered: the deduplication horizon (mlcp.runtime.retention)."""
    retention_interval_s: float = Field(3600.0, gt=0, le=86_400)
    startup_timeout_s: float = Field(60.0, gt=0, le=3600)
    consumer_commit_every: int = Field(100, ge=1, le=100_000)
    consumer_commit_interval_s: float = Field(0.2, gt=0, le=60)
    consumer_session_timeout_ms: int = Field(10_000, ge=1_000)
    consumer_heartbeat_interval_ms: int = Field(1_000, ge=100)
    internal_api_clients: str = "127.0.0.0/8,::1"
    """Networks (comma-separated addresses / CIDR blocks) whose clients an internal read API —
    the gatekeeper's, the monitor's — answers; everyone else gets 403 (mlcp.runtime.internal)."""
    max_record_bytes: int = Field(MAX_EVENT_BYTES, ge=1024, le=MAX_EVENT_BYTES)
    """Largest record a consumer decodes; a larger one is dead-lettered (reason ``too_large``)
    unparsed. The contract's own limit is the ceiling: lower it to bound a consumer's memory."""
    max_json_depth: int = Field(MAX_JSON_DEPTH, ge=8, le=512)
    """Deepest JSON nesting a consumer parses; a deeper record is dead-lettered (``too_deep``)
    unparsed. At most 512: the parsers recurse per level, up to the interpreter's ~1000."""

    @model_validator(mode="after")
    def _kafka_credentials(self) -> Settings:
        if self.kafka_password is not None and self.kafka_password_file is not None:
            raise ValueError("set MLCP_KAFKA_PASSWORD or MLCP_KAFKA_PASSWORD_FILE, not both")
        if self.kafka_ca_file is not None and not self.kafka_security_protocol.endswith("SSL"):
            raise ValueError(
                "MLCP_KAFKA_CA_FILE is set but MLCP_KAFKA_SECURITY_PROTOCOL="
                f"{self.kafka_security_protocol} does not use TLS (use SASL_SSL)"
            )
        return self

    def kafka_credentials(self) -> tuple[str, str]:
        """(username, password) for SASL, or ``ConfigurationError`` naming what is missing.
        Checked when a client is built, not when settings are read: a process that never
        touches Kafka (a migration, a unit test) needs no bus identity."""
        if self.kafka_username is None:
            raise ConfigurationError(
                f"MLCP_KAFKA_USERNAME is required with MLCP_KAFKA_SECURITY_PROTOCOL="
                f"{self.kafka_security_protocol}: the bus principal, e.g. svc-registry "
                "(`mlcp dev env PRINCIPAL` prints the dev stack's settings)"
            )
        secret = self.kafka_secret()
        if secret is None:
            raise ConfigurationError(
                f"MLCP_KAFKA_PASSWORD_FILE or MLCP_KAFKA_PASSWORD is required for bus principal "
                f"{self.kafka_username!r}"
            )
        return self.kafka_username, secret

    def kafka_secret(self) -> str | None:
        """The bus password, read now (a rotated password file is picked up at each start)."""
        if self.kafka_password is not None:
            return self.kafka_password.get_secret_value()
        if self.kafka_password_file is None:
            return None
        try:
            text = self.kafka_password_file.expanduser().read_text()
        except OSError as exc:
            raise ConfigurationError(
                f"MLCP_KAFKA_PASSWORD_FILE={self.kafka_password_file}: cannot read it "
                f"({exc.strerror or exc})"
            ) from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise ConfigurationError(
                f"MLCP_KAFKA_PASSWORD_FILE={self.kafka_password_file} is empty"
            )
        return lines[0]

    @field_validator("database_url")
    @classmethod
    def _postgres_scheme(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("internal_api_clients")
    @classmethod
    def _networks(cls, value: str) -> str:
        from mlcp.runtime.internal import parse_networks

        parse_networks(value)
        return value

    def group_id(self, service: str) -> str:
        """The consumer group of ``service`` (one per service, behind the topic prefix)."""
        return f"{self.topic_prefix}mlcp-{service}"

    def topic(self, event_type: str) -> str:
        """The Kafka topic carrying ``event_type`` (the type itself, behind the optional prefix)."""
        return f"{self.topic_prefix}{event_type}"


# Values that can carry credentials (a DSN's password, a webhook key, a token) are never echoed.
_SECRET_NAME = re.compile(r"(url|token|secret|password|key)", re.IGNORECASE)


def describe_settings_error(exc: Exception, *, env_prefix: str = "MLCP_") -> str:
    """One line per invalid setting, naming its environment variable."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    lines = []
    for error in exc.errors():
        if not error["loc"]:  # a rule across fields: its message names the variables
            lines.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        field = str(error["loc"][0])
        # URLs can carry credentials (the DSN's password, a webhook key): never echo them.
        shown = "" if _SECRET_NAME.search(field) else f" (got {error.get('input')!r})"
        lines.append(f"{env_prefix}{field.upper()}: {error['msg']}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_artifact_limits() -> ArtifactLimits:
    """The artifact budgets (``MLCP_ARTIFACT_MAX_*``), or ``ConfigurationError`` naming the bad
    variable."""
    try:
        return ArtifactLimits.from_env()
    except ValueError as exc:
        raise ConfigurationError(f"invalid configuration:\n  {exc}") from None


def settings_from_env(env: Mapping[str, str], **overrides: Any) -> Settings:
    """Settings from ``MLCP_*`` variables given as a mapping (a child's environment, the dev
    stack's exports); the process environment is not read. Invalid → ``ConfigurationError``."""
    values = {k.removeprefix("MLCP_").lower(): v for k, v in env.items() if k.startswith("MLCP_")}
    try:
        return Settings.model_validate({**values, **overrides})
    except Exception as exc:
        raise ConfigurationError(describe_settings_error(exc)) from None


def load_settings() -> Settings:
    """Settings from the environment, or ``ConfigurationError`` naming the bad variables."""
    return load_env_settings(Settings)


S = TypeVar("S", bound=BaseSettings)


def load_env_settings(cls: type[S]) -> S:
    """A service's own ``BaseSettings`` (``MLCP_GATEKEEPER_*`` …), with the same clear errors."""
    try:
        return cls()
    except Exception as exc:
        prefix = str(cls.model_config.get("env_prefix") or "")
        raise ConfigurationError(describe_settings_error(exc, env_prefix=prefix)) from None
