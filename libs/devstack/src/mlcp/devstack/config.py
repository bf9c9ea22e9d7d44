"""Where the dev stack keeps its files and which servers it points at.

Environment variables decide: `MLCP_KAFKA_BOOTSTRAP` / `MLCP_DATABASE_URL` name existing servers
(then nothing is started), `MLCP_DEV_*_PORT` move the servers the stack starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_KAFKA_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093
DEFAULT_TLS_PORT = 9094
DEFAULT_POSTGRES_PORT = 55432
PG_USER = "mlcp"
PG_PASSWORD = "mlcp"  # loopback-only dev server; the DSN is documented, so is the password
PG_DATABASE = "mlcp"
DEFAULT_BOOTSTRAP = f"127.0.0.1:{DEFAULT_KAFKA_PORT}"
DEFAULT_DATABASE_URL = (
    f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{DEFAULT_POSTGRES_PORT}/{PG_DATABASE}"
)


class DevstackError(Exception):
    """A problem the user can fix. The CLI prints only the message and exits with code 2."""


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    cache_dir: Path
    kafka_port: int
    controller_port: int
    postgres_port: int
    tls_port: int
    external_bootstrap: str | None
    external_database_url: str | None

    @property
    def bootstrap(self) -> str:
        return self.external_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def database_url(self) -> str:
        return self.external_database_url or (
            f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.postgres_port}/{PG_DATABASE}"
        )

    @property
    def tls_bootstrap(self) -> str | None:
        """The broker's SASL_SSL listener (None for an external Kafka)."""
        return None if self.external_bootstrap else f"127.0.0.1:{self.tls_port}"

    @property
    def kafka_dir(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def postgres_dir(self) -> Path:
        return self.state_dir / "postgres"


@dataclass(frozen=True)
class StackInfo:
    """What `up()` produced: where to connect, and which parts this call started."""

    bootstrap: str
    database_url: str
    kafka_started: bool = False
    postgres_started: bool = False
    kafka_external: bool = False  # MLCP_KAFKA_BOOTSTRAP was set: not ours to start or stop
    postgres_external: bool = False
    credentials_dir: Path | None = None  # one password file per principal (ours only)
    tls_bootstrap: str | None = None  # the SASL_SSL listener (ours only)
    ca_file: Path | None = None  # the CA that signed its certificate

    def env(self, principal: str | None = None, *, tls: bool = False) -> dict[str, str]:
        """The variables a process needs to reach this stack as ``principal`` (the addresses
        only when None, or for an external Kafka, whose credentials are the caller's)."""
        env = {"MLCP_KAFKA_BOOTSTRAP": self.bootstrap, "MLCP_DATABASE_URL": self.database_url}
        if principal is None or self.credentials_dir is None:
            return env
        env |= {
            "MLCP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "MLCP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "MLCP_KAFKA_USERNAME": principal,
            "MLCP_KAFKA_PASSWORD_FILE": str(self.credentials_dir / principal),
        }
        if tls and self.tls_bootstrap and self.ca_file:
            env |= {
                "MLCP_KAFKA_BOOTSTRAP": self.tls_bootstrap,
                "MLCP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "MLCP_KAFKA_CA_FILE": str(self.ca_file),
            }
        return env


def _get(env: Mapping[str, str], name: str) -> str | None:
    # An exported-but-empty variable counts as unset: shells make that easy to do by accident.
    value = env.get(name, "").strip()
    return value or None


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise DevstackError(f"{name}={raw!r} is not a TCP port (1-65535).")
    return int(raw)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    state_root = Path(_get(env, "MLCP_STATE_DIR") or "~/.local/state/mlcp").expanduser()
    cache_dir = Path(_get(env, "MLCP_CACHE_DIR") or "~/.cache/mlcp").expanduser()
    settings = Settings(
        state_dir=state_root.absolute() / "devstack",
        cache_dir=cache_dir.absolute(),
        kafka_port=_port(env, "MLCP_DEV_KAFKA_PORT", DEFAULT_KAFKA_PORT),
        controller_port=_port(env, "MLCP_DEV_KAFKA_CONTROLLER_PORT", DEFAULT_CONTROLLER_PORT),
        postgres_port=_port(env, "MLCP_DEV_POSTGRES_PORT", DEFAULT_POSTGRES_PORT),
        tls_port=_port(env, "MLCP_DEV_KAFKA_TLS_PORT", DEFAULT_TLS_PORT),
        external_bootstrap=_get(env, "MLCP_KAFKA_BOOTSTRAP"),
        external_database_url=_get(env, "MLCP_DATABASE_URL"),
    )
    kafka_ports = (settings.kafka_port, settings.controller_port, settings.tls_port)
    if len(set(kafka_ports)) != len(kafka_ports):
        raise DevstackError(
            "MLCP_DEV_KAFKA_PORT, MLCP_DEV_KAFKA_CONTROLLER_PORT and MLCP_DEV_KAFKA_TLS_PORT "
            f"must differ (they are {', '.join(map(str, kafka_ports))})."
        )
    return settings
