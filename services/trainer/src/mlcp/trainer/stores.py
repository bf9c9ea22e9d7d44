"""The interfaces the trainer's handlers and workers depend on, one per aggregate, and the
PostgreSQL implementations wired in production.

Every method takes the connection of the caller's transaction first (``tx.conn``): the
PostgreSQL stores are the modules ``ledger_store``, ``trigger_store``, ``run_store`` and
``production_store`` themselves; ``tests/fakes/trainer.py`` holds in-memory ones for unit tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlcp.runtime.db import Conn
from mlcp.trainer import ledger_store, production_store, run_store, trigger_store
from mlcp.trainer.domain import StoredArtifact
from mlcp.trainer.ledger import (
    DatasetHead,
    Duplicate,
    KnownBatches,
    LedgerBatch,
    LedgerEntry,
    Rejection,
    RequestRecord,
    TriggerState,
)
from mlcp.trainer.runs import ClaimedRun, DecidedRequest, QueuedRun, RunResult


class LedgerStore(Protocol):
    """Datasets' ledgers: heads, accepted batches, duplicates, refusals."""

    async def lock_dataset(self, conn: Conn, dataset: str) -> DatasetHead:
        """Create the dataset's head if new and lock it for the rest of the transaction."""

    async def known_batches(
        self, conn: Conn, dataset: str, batch_ids: list[str], sha256s: list[str]
    ) -> KnownBatches:
        """The ledger's batches of ``dataset`` with any of these ids or contents."""

    async def append_ledger(
        self, conn: Conn, head: DatasetHead, entries: Sequence[LedgerEntry]
    ) -> None:
        """Write accepted batches and move the dataset's head to ``head``."""

    async def record_duplicates(self, conn: Conn, duplicates: Sequence[Duplicate]) -> None:
        """Remember re-announced batches."""

    async def record_rejected(self, conn: Conn, rejected: Sequence[Rejection]) -> None:
        """Remember refused batches."""

    async def event_ids_after(
        self, conn: Conn, dataset: str, seq: int, limit: int
    ) -> list[tuple[int, str]]:
        """(seq, DataArrived id) of the most recent ``limit`` batches after ``seq``."""

    async def batches_upto(self, conn: Conn, dataset: str, seq: int) -> list[LedgerBatch]:
        """Every accepted batch of ``dataset`` up to ``seq``, in ledger order."""


class TriggerStore(Protocol):
    """Models' retraining triggers and the requests decided for them."""

    async def lock_trigger(self, conn: Conn, model: str, dataset: str) -> TriggerState:
        """Create the model's trigger state if new and lock it (after its dataset's row)."""

    async def record_requests(self, conn: Conn, records: Sequence[RequestRecord]) -> None:
        """Remember requests and move each model's counter to the head its last one covers."""

    async def count_suppressed_drift(self, conn: Conn, model: str) -> None:
        """Count a DriftDetected absorbed by the cool-down."""

    async def decided_requests(
        self, conn: Conn, request_ids: Sequence[str]
    ) -> dict[str, DecidedRequest]:
        """Of these requests, those this trainer decided."""


class RunStore(Protocol):
    """The run queue, leases and attempts, and the tracking tables."""

    async def insert_runs(self, conn: Conn, runs: Sequence[QueuedRun]) -> int:
        """Queue runs (one per request); how many were new."""

    async def claim_run(self, conn: Conn, *, worker: str, lease_s: float) -> ClaimedRun | None:
        """Take the oldest queued run, or one whose worker's lease expired."""

    async def extend_lease(self, conn: Conn, run_id: str, attempt: int, lease_s: float) -> bool:
        """Keep holding a run; False when another worker took it over."""

    async def release_run(self, conn: Conn, run_id: str, attempt: int) -> None:
        """Hand a held run back at once."""

    async def fail_run(
        self,
        conn: Conn,
        run_id: str,
        attempt: int,
        *,
        stage: str,
        error: str,
        error_type: str | None,
        duration_s: float | None = None,
    ) -> bool:
        """Mark a held run failed; False when this worker no longer holds it."""

    async def finish_run(self, conn: Conn, run_id: str, attempt: int, result: RunResult) -> bool:
        """Record a held run's results; False when fenced off."""

    async def run_lineage(self, conn: Conn, run_id: str) -> dict[str, Any] | None:
        """Everything recorded about a run (None when unknown)."""


class ProductionStore(Protocol):
    """The trainer's projection of the registry: versions' artifacts, the production alias."""

    async def record_version(
        self, conn: Conn, *, model: str, version: str, run_id: str, uri: str, sha256: str, fmt: str
    ) -> None:
        """Remember a registered version's artifact."""

    async def production_version(self, conn: Conn, model: str) -> str | None:
        """The version the trainer believes serves ``model`` in production."""

    async def set_production(
        self, conn: Conn, model: str, version: str | None, event_id: str
    ) -> None:
        """Move the production projection of ``model``."""

    async def production_artifact(self, conn: Conn, model: str) -> StoredArtifact | None:
        """The production version's artifact, when both are known."""


def _ledger() -> LedgerStore:
    return ledger_store


def _triggers() -> TriggerStore:
    return trigger_store


def _runs() -> RunStore:
    return run_store


def _production() -> ProductionStore:
    return production_store


@dataclass(frozen=True)
class Stores:
    """The stores a handler or a worker is given (PostgreSQL unless a test passes fakes)."""

    ledger: LedgerStore = field(default_factory=_ledger)
    triggers: TriggerStore = field(default_factory=_triggers)
    runs: RunStore = field(default_factory=_runs)
    production: ProductionStore = field(default_factory=_production)
