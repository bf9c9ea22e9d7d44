"""In-memory stores of the trainer (``mlcp.trainer.stores``' interfaces), for unit tests of
its handlers and workers. They keep the PostgreSQL stores' semantics that decisions rely on:
one head per dataset, a redelivered row recorded once, a run fenced by its attempt.

``locks`` (shared by the ledger and the triggers of one ``fake_stores()``) records the rows
locked, in order, so a test can check the lock order datasets → triggers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

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
from mlcp.trainer.stores import Stores


@dataclass
class FakeLedger:
    """Datasets' heads and ledgers in dicts."""

    locks: list[str] = field(default_factory=list)
    heads: dict[str, DatasetHead] = field(default_factory=dict)
    entries: dict[str, list[LedgerEntry]] = field(default_factory=dict)
    duplicates: dict[str, Duplicate] = field(default_factory=dict)
    rejected: dict[str, Rejection] = field(default_factory=dict)

    async def lock_dataset(self, conn: Any, dataset: str) -> DatasetHead:
        self.locks.append(f"dataset:{dataset}")
        return self.heads.setdefault(dataset, DatasetHead(dataset, 0, 0))

    async def known_batches(
        self, conn: Any, dataset: str, batch_ids: list[str], sha256s: list[str]
    ) -> KnownBatches:
        by_id: dict[str, str] = {}
        by_content: dict[str, tuple[str, int]] = {}
        for e in self.entries.get(dataset, []):
            if e.data.batch_id in batch_ids or e.data.sha256 in sha256s:
                by_id[e.data.batch_id] = e.data.sha256
                by_content.setdefault(e.data.sha256, (e.data.batch_id, e.seq))
        return KnownBatches(by_id, by_content)

    async def append_ledger(
        self, conn: Any, head: DatasetHead, entries: Sequence[LedgerEntry]
    ) -> None:
        if not entries:
            return
        ledger = self.entries.setdefault(head.dataset, [])
        assert {e.seq for e in ledger}.isdisjoint(e.seq for e in entries), "ledger seq reused"
        ledger.extend(entries)
        self.heads[head.dataset] = head

    async def record_duplicates(self, conn: Any, duplicates: Sequence[Duplicate]) -> None:
        for d in duplicates:
            self.duplicates.setdefault(d.event_id, d)

    async def record_rejected(self, conn: Any, rejected: Sequence[Rejection]) -> None:
        for r in rejected:
            self.rejected.setdefault(r.event_id, r)

    async def event_ids_after(
        self, conn: Any, dataset: str, seq: int, limit: int
    ) -> list[tuple[int, str]]:
        after = [(e.seq, e.event_id) for e in self.entries.get(dataset, []) if e.seq > seq]
        return sorted(after)[-limit:]

    async def batches_upto(self, conn: Any, dataset: str, seq: int) -> list[LedgerBatch]:
        again = Counter(d.of_seq for d in self.duplicates.values() if d.data.dataset == dataset)
        return [
            LedgerBatch(
                e.seq,
                e.data.batch_id,
                e.data.uri,
                e.data.rows,
                e.data.sha256,
                e.data.completeness,
                e.data.format,
                again[e.seq],
            )
            for e in sorted(self.entries.get(dataset, []), key=lambda e: e.seq)
            if e.seq <= seq
        ]

    def batch_ids(self, dataset: str) -> list[str]:
        """The accepted batch ids of ``dataset``, in ledger order."""
        return [e.data.batch_id for e in sorted(self.entries.get(dataset, []), key=lambda e: e.seq)]


@dataclass
class FakeTriggers:
    """Models' trigger states and recorded requests in dicts."""

    locks: list[str] = field(default_factory=list)
    states: dict[str, TriggerState] = field(default_factory=dict)
    requests: dict[str, RequestRecord] = field(default_factory=dict)
    suppressed: Counter[str] = field(default_factory=Counter)
    traceparents: dict[str, str] = field(default_factory=dict)
    """request id → the traceparent its outbox row carries (the real store reads the outbox)."""

    async def lock_trigger(self, conn: Any, model: str, dataset: str) -> TriggerState:
        self.locks.append(f"trigger:{model}")
        return self.states.setdefault(model, TriggerState(model, dataset, 0, 0, None))

    async def record_requests(self, conn: Any, records: Sequence[RequestRecord]) -> None:
        for r in records:
            self.requests.setdefault(r.request_id, r)
            state = self.states[r.request.model]
            self.states[r.request.model] = replace(
                state,
                dataset=r.dataset.dataset,
                consumed_seq=r.dataset.last_seq,
                consumed_rows=r.dataset.total_rows,
                last_drift_request_at=r.requested_at
                if r.request.reason == "drift"
                else state.last_drift_request_at,
            )

    async def count_suppressed_drift(self, conn: Any, model: str) -> None:
        self.suppressed[model] += 1

    async def decided_requests(
        self, conn: Any, request_ids: Sequence[str]
    ) -> dict[str, DecidedRequest]:
        return {
            i: DecidedRequest(self.requests[i].dataset.last_seq, self.traceparents.get(i))
            for i in request_ids
            if i in self.requests
        }


@dataclass
class FakeRun:
    """A run row: the queued run and its state."""

    queued: QueuedRun
    status: str = "queued"
    attempt: int = 0
    worker: str | None = None
    failure: tuple[str, str, str | None] | None = None
    """(stage, error, error_type) of a failed run."""
    result: RunResult | None = None


@dataclass
class FakeRuns:
    """The run queue in a dict (insertion order is the queue's order)."""

    runs: dict[str, FakeRun] = field(default_factory=dict)

    async def insert_runs(self, conn: Any, runs: Sequence[QueuedRun]) -> int:
        new = 0
        requests = {r.queued.request_id for r in self.runs.values()}
        for run in runs:
            if run.run_id in self.runs or run.request_id in requests:
                continue
            self.runs[run.run_id] = FakeRun(run)
            requests.add(run.request_id)
            new += 1
        return new

    async def claim_run(self, conn: Any, *, worker: str, lease_s: float) -> ClaimedRun | None:
        for run in self.runs.values():
            if run.status == "queued":
                run.status, run.attempt, run.worker = "running", run.attempt + 1, worker
                return self.claimed(run.queued.run_id)
        return None

    def claimed(self, run_id: str) -> ClaimedRun:
        """The run as a worker holds it."""
        run = self.runs[run_id]
        q = run.queued
        return ClaimedRun(
            q.run_id,
            q.request_id,
            q.request_event,
            q.request.model,
            q.request.reason,
            q.dataset,
            q.ledger_seq,
            run.attempt,
            q.traceparent,
        )

    def _held(self, run_id: str, attempt: int) -> FakeRun | None:
        run = self.runs.get(run_id)
        if run is None or run.attempt != attempt or run.status != "running":
            return None
        return run

    async def extend_lease(self, conn: Any, run_id: str, attempt: int, lease_s: float) -> bool:
        return self._held(run_id, attempt) is not None

    async def release_run(self, conn: Any, run_id: str, attempt: int) -> None:
        run = self._held(run_id, attempt)
        if run is not None:
            run.status = "queued"

    async def fail_run(
        self,
        conn: Any,
        run_id: str,
        attempt: int,
        *,
        stage: str,
        error: str,
        error_type: str | None,
        duration_s: float | None = None,
    ) -> bool:
        run = self._held(run_id, attempt)
        if run is None:
            return False
        run.status, run.failure = "failed", (stage, error, error_type)
        return True

    async def finish_run(self, conn: Any, run_id: str, attempt: int, result: RunResult) -> bool:
        run = self._held(run_id, attempt)
        if run is None:
            return False
        run.status, run.result = "finished", result
        return True

    async def run_lineage(self, conn: Any, run_id: str) -> dict[str, Any] | None:
        run = self.runs.get(run_id)
        if run is None:
            return None
        return {"run_id": run_id, "status": run.status, "attempt": run.attempt}


@dataclass
class FakeProduction:
    """Registered versions' artifacts and the production alias in dicts."""

    versions: dict[tuple[str, str], StoredArtifact] = field(default_factory=dict)
    production: dict[str, str | None] = field(default_factory=dict)
    moved_by: dict[str, str] = field(default_factory=dict)
    """model → id of the event that last moved its production version."""

    async def record_version(
        self, conn: Any, *, model: str, version: str, run_id: str, uri: str, sha256: str, fmt: str
    ) -> None:
        self.versions.setdefault((model, version), StoredArtifact(version, uri, sha256, fmt))

    async def production_version(self, conn: Any, model: str) -> str | None:
        return self.production.get(model)

    async def set_production(
        self, conn: Any, model: str, version: str | None, event_id: str
    ) -> None:
        self.production[model] = version
        self.moved_by[model] = event_id

    async def production_artifact(self, conn: Any, model: str) -> StoredArtifact | None:
        version = self.production.get(model)
        return None if version is None else self.versions.get((model, version))


@dataclass(frozen=True)
class FakeStores:
    """The four fakes, typed as themselves (tests read their state), and as ``Stores``."""

    ledger: FakeLedger
    triggers: FakeTriggers
    runs: FakeRuns
    production: FakeProduction

    def stores(self) -> Stores:
        """What a handler or a worker is given."""
        return Stores(self.ledger, self.triggers, self.runs, self.production)


def fake_stores() -> FakeStores:
    """Empty in-memory stores whose ledger and triggers share one lock log."""
    locks: list[str] = []
    return FakeStores(FakeLedger(locks), FakeTriggers(locks), FakeRuns(), FakeProduction())
