"""mlcp.runtime — shared plumbing of every mlcp service (no domain logic).

The package itself imports nothing: its names resolve on first use (PEP 562), so that
`import mlcp.runtime.settings` or a pure module that needs one small helper does not load
FastStream, aiokafka, asyncpg and uvicorn. Services import the submodules they need; the
names below stay for convenience.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlcp.runtime.batch import BatchHandler as BatchHandler
    from mlcp.runtime.consumer import DurableConsumer as DurableConsumer
    from mlcp.runtime.consumer import Handler as Handler
    from mlcp.runtime.consumer import Outcome as Outcome
    from mlcp.runtime.consumer import Tx as Tx
    from mlcp.runtime.migrations import service_migrations_dir as service_migrations_dir
    from mlcp.runtime.outbox import OutboxRelay as OutboxRelay
    from mlcp.runtime.outbox import enqueue as enqueue
    from mlcp.runtime.service import ServiceRuntime as ServiceRuntime
    from mlcp.runtime.settings import Settings as Settings

# Exported name → the submodule that defines it.
_EXPORTS = {
    "BatchHandler": "batch",
    "DurableConsumer": "consumer",
    "Handler": "consumer",
    "Outcome": "consumer",
    "Tx": "consumer",
    "service_migrations_dir": "migrations",
    "OutboxRelay": "outbox",
    "enqueue": "outbox",
    "ServiceRuntime": "service",
    "Settings": "settings",
}

__all__ = [
    "BatchHandler",
    "DurableConsumer",
    "Handler",
    "OutboxRelay",
    "Outcome",
    "ServiceRuntime",
    "Settings",
    "Tx",
    "enqueue",
    "service_migrations_dir",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        # Submodules (`mlcp.runtime.inbox`) are found by the import system, not here.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
