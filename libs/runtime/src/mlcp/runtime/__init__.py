"""mlcp.runtime — shared plumbing of every mlcp service (no domain logic)."""

from mlcp.runtime.batch import BatchHandler
from mlcp.runtime.consumer import DurableConsumer, Handler, Outcome, Tx
from mlcp.runtime.migrations import service_migrations_dir
from mlcp.runtime.outbox import OutboxRelay, enqueue
from mlcp.runtime.service import ServiceRuntime
from mlcp.runtime.settings import Settings

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
