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

    def env(self) -> dict[str, str]:
        """The variables a service process needs to reach this stack."""
        return {"MLCP_KAFKA_BOOTSTRAP": self.bootstrap, "MLCP_DATABASE_URL": self.database_url}


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
        external_bootstrap=_get(env, "MLCP_KAFKA_BOOTSTRAP"),
        external_database_url=_get(env, "MLCP_DATABASE_URL"),
    )
    if settings.kafka_port == settings.controller_port:
        raise DevstackError(
            "MLCP_DEV_KAFKA_PORT and MLCP_DEV_KAFKA_CONTROLLER_PORT must differ "
            f"(both are {settings.kafka_port})."
        )
    return settings
