"""Every decision of the trainer's handlers and workers, against in-memory stores and a recording
transaction: the ledger (accepted, duplicate, conflict, checksum mismatch), threshold crossings,
drift cool-down, requests decided here or elsewhere, the production projection, a run's claim
and its outcome. The same paths against real Kafka and PostgreSQL are in
tests/integration/test_trainer_*.py."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from mlcp.contracts import (
    CloudEvent,
    DataArrived,
    DatasetRef,
    DriftDetected,
    ModelPromoted,
    ModelRolledBack,
    ModelVersionRegistered,
    RunFailed,
    RunFinished,
    RunStarted,
    TrainingRequested,
    new_event,
)
from mlcp.contracts.common import ArtifactRef, FeatureSpec, Window
from mlcp.contracts.monitoring import FeatureDrift
from mlcp.contracts.profile import ReferenceProfile
from mlcp.contracts.types import MAX_TRIGGERS
from mlcp.policy.platform import PlatformConfig
from mlcp.runtime import ServiceRuntime, Settings
from mlcp.trainer import runs
from mlcp.trainer.domain import StoredArtifact, UnknownModel
from mlcp.trainer.handlers import TrainerHandlers
from mlcp.trainer.ledger import DatasetHead
from mlcp.trainer.runs import ChildOutcome, Failed, Finished, QueuedRun
from mlcp.trainer.worker import Worker, WorkerSettings
from tests.fakes.trainer import FakeStores, fake_stores
from tests.fakes.tx import RecordingTx

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def config(threshold: int = 1000, **extra_models: dict[str, Any]) -> PlatformConfig:
    """churn and upsell fed by churn-events (threshold ``threshold``), plus ``extra_models``."""
    model = {
        "dataset": "churn-events",
        "label": "churned",
        "train": "mlcp.examples.sklearn:train_logistic",
        "retrain": {"min_new_rows": threshold, "drift_cooldown": "30m"},
    }
    models = {"churn": model, "upsell": {**model, "retrain": {"min_new_rows": 2 * threshold}}}
    return PlatformConfig.model_validate({"models": {**models, **extra_models}})


def arrived(
    batch_id: str,
    sha256: str,
    rows: int = 400,
    *,
    dataset: str = "churn-events",
    uri: str | None = None,
) -> CloudEvent[Any]:
    data = DataArrived(
        dataset=dataset,
        batch_id=batch_id,
        uri=uri or f"s3://bucket/{batch_id}.csv",
        rows=rows,
        sha256=sha256,
        completeness=1.0,
    )
    return new_event(data, source="pipeline")


def drift(at: datetime, model: str = "churn") -> CloudEvent[Any]:
    data = DriftDetected(
        model=model,
        version="1.0.0",
        alias="production",
        features=(
            FeatureDrift(name="tenure", method="psi", score=0.4, threshold=0.2, drifted=True),
        ),
        window=Window(start=at - timedelta(minutes=5), end=at, size=1000),
        share_drifted=1.0,
    )
    return new_event(data, source="mlcp/monitor").model_copy(update={"time": at})


class Trainer:
    """Handlers over fresh fakes, and a transaction per handled event (as the runtime gives)."""

    def __init__(self, cfg: PlatformConfig | None = None) -> None:
        self.fakes: FakeStores = fake_stores()
        self.handlers = TrainerHandlers(cfg or config(), stores=self.fakes.stores())
        self.emitted: list[CloudEvent[Any]] = []

    async def handle(self, handler: Any, event: Any) -> RecordingTx:
        first = event[0] if isinstance(event, list) else event
        tx = RecordingTx(service="trainer", cause=first)
        await handler(event, tx)
        self.emitted += tx.emitted
        return tx

    async def data(self, *events: CloudEvent[Any]) -> RecordingTx:
        return await self.handle(self.handlers.on_data_arrived, list(events))

    def requests(self) -> list[TrainingRequested]:
        return [e.data for e in self.emitted if e.type == TrainingRequested.TYPE]


# --- DataArrived: the ledger ---------------------------------------------------------------------


async def test_a_new_batch_below_every_threshold_is_counted_and_requests_nothing() -> None:
    t = Trainer()
    tx = await t.data(arrived("b1", SHA_A, rows=999))
    assert tx.emitted == []
    assert t.fakes.ledger.heads["churn-events"] == DatasetHead("churn-events", 1, 999)
    assert t.fakes.ledger.batch_ids("churn-events") == ["b1"]
    assert t.fakes.triggers.states["churn"].consumed_rows == 0
    assert t.fakes.ledger.locks == ["dataset:churn-events", "trigger:churn", "trigger:upsell"]


async def test_the_crossing_batch_requests_one_retrain_covering_its_rows() -> None:
    t = Trainer()
    first, second = arrived("b1", SHA_A, rows=600), arrived("b2", SHA_B, rows=400)
    tx = await t.data(first, second)
    assert tx.emitted_types() == [TrainingRequested.TYPE]
    (event,) = tx.emitted
    request: TrainingRequested = event.data
    assert (request.model, request.reason, request.dataset) == (
        "churn",
        "data_threshold",
        "churn-events",
    )
    assert (request.rows_since_last_run, request.threshold) == (1000, 1000)
    assert request.trigger_event_ids == (first.id, second.id)
    assert event.causationid == second.id, "the crossing batch caused it"
    recorded = t.fakes.triggers.requests[event.id]
    assert recorded.dataset == DatasetHead("churn-events", 2, 1000)
    assert recorded.requested_at == second.time
    state = t.fakes.triggers.states["churn"]
    assert (state.consumed_seq, state.consumed_rows) == (2, 1000), "the counter restarts"
    assert t.fakes.triggers.states["upsell"].consumed_rows == 0, "upsell needs 2000"


async def test_a_kafka_batch_crossing_twice_requests_twice_each_with_its_own_rows() -> None:
    t = Trainer()
    events = [arrived(f"b{i}", f"{i:064x}", rows=500) for i in range(4)]
    tx = await t.data(*events)
    churn = [e for e in tx.emitted if e.data.model == "churn"]
    assert [e.data.trigger_event_ids for e in churn] == [
        (events[0].id, events[1].id),
        (events[2].id, events[3].id),
    ]
    assert [e.causationid for e in churn] == [events[1].id, events[3].id]
    upsell = [e for e in tx.emitted if e.data.model == "upsell"]
    assert [e.data.rows_since_last_run for e in upsell] == [2000]
    assert tx.emitted_types() == [TrainingRequested.TYPE] * 3
    assert t.fakes.triggers.states["churn"].consumed_seq == 4


async def test_a_crossing_covers_the_ids_of_batches_committed_in_earlier_transactions() -> None:
    t = Trainer()
    earlier = [arrived(f"b{i}", f"{i:064x}", rows=300) for i in range(3)]
    for event in earlier:
        assert (await t.data(event)).emitted == []
    crossing = arrived("b3", SHA_A, rows=100)
    tx = await t.data(crossing)
    (event,) = [e for e in tx.emitted if e.data.model == "churn"]
    assert event.data.trigger_event_ids == (*[e.id for e in earlier], crossing.id)


async def test_trigger_ids_keep_the_most_recent_when_a_crossing_covers_more_batches() -> None:
    t = Trainer(config(threshold=MAX_TRIGGERS + 10))
    earlier = [arrived(f"b{i}", f"{i:064x}", rows=1) for i in range(MAX_TRIGGERS + 5)]
    assert (await t.data(*earlier)).emitted == []
    last = [arrived(f"c{i}", f"{i + 5000:064x}", rows=1) for i in range(5)]
    tx = await t.data(*last)
    (event,) = tx.emitted
    ids = event.data.trigger_event_ids
    assert len(ids) == MAX_TRIGGERS
    assert ids[-5:] == tuple(e.id for e in last)


async def test_the_same_content_under_another_id_is_a_duplicate_never_counted_again() -> None:
    t = Trainer(config(threshold=500))
    original = arrived("b1", SHA_A, rows=400)
    await t.data(original)
    again = arrived("b1-retry", SHA_A, rows=400)
    tx = await t.data(again)
    assert tx.emitted == [], "400 rows, not 800: no crossing"
    assert t.fakes.ledger.heads["churn-events"].total_rows == 400
    duplicate = t.fakes.ledger.duplicates[again.id]
    assert (duplicate.of_batch_id, duplicate.of_seq) == ("b1", 1)
    assert t.handlers.duplicates.labels("churn-events")._value.get() == 1
    batches = await t.fakes.ledger.batches_upto(None, "churn-events", 1)
    assert [b.duplicates for b in batches] == [1]


async def test_a_batch_re_sent_within_one_kafka_batch_is_a_duplicate_of_the_first() -> None:
    t = Trainer()
    tx = await t.data(arrived("b1", SHA_A, rows=600), arrived("b1", SHA_A, rows=600))
    assert tx.emitted == []
    assert t.fakes.ledger.batch_ids("churn-events") == ["b1"]
    assert len(t.fakes.ledger.duplicates) == 1


async def test_a_known_batch_id_with_other_content_is_refused_and_not_counted() -> None:
    t = Trainer()
    await t.data(arrived("b1", SHA_A, rows=600))
    conflict = arrived("b1", SHA_B, rows=600)
    tx = await t.data(conflict)
    assert tx.emitted == []
    assert t.fakes.ledger.heads["churn-events"].total_rows == 600
    rejected = t.fakes.ledger.rejected[conflict.id]
    assert rejected.reason == f"batch id already in the ledger with sha256 {SHA_A}"


async def test_a_file_that_does_not_match_its_sha256_is_refused_with_run_failed_per_model(
    tmp_path: Path,
) -> None:
    t = Trainer(config(threshold=1))
    path = tmp_path / "b1.csv"
    path.write_text("x,churned\n1,0\n")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    event = arrived("b1", SHA_A, rows=1, uri=path.as_uri())
    tx = await t.data(event)
    assert tx.emitted_types() == [RunFailed.TYPE, RunFailed.TYPE]
    failures: list[RunFailed] = [e.data for e in tx.emitted]
    assert [f.model for f in failures] == ["churn", "upsell"]
    for failed in failures:
        assert failed.run_id == f"rejected-batch:{event.id}"
        assert (failed.stage, failed.error_type) == ("verify_data", "ChecksumMismatch")
        assert SHA_A in failed.error
        assert actual in failed.error
        assert path.as_uri() in failed.error
    assert "churn-events" not in t.fakes.ledger.entries, "the ledger is unchanged"
    assert t.fakes.ledger.rejected[event.id].actual == actual


async def test_a_local_file_that_matches_is_counted_as_verified(tmp_path: Path) -> None:
    t = Trainer()
    path = tmp_path / "b1.csv"
    path.write_text("x,churned\n1,0\n")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    await t.data(arrived("b1", digest, rows=1, uri=str(path)), arrived("b2", SHA_B, rows=1))
    verified = [e.verified for e in t.fakes.ledger.entries["churn-events"]]
    assert verified == [True, False], "a remote batch is verified when a run loads it"


async def test_datasets_of_one_kafka_batch_are_locked_in_name_order_datasets_first() -> None:
    cfg = config(
        threshold=100,
        fraud={"dataset": "a-payments", "label": "y", "train": "m:f", "retrain": {}},
    )
    t = Trainer(cfg)
    await t.data(
        arrived("p1", SHA_A, dataset="z-unfed"), arrived("p2", SHA_B, dataset="a-payments")
    )
    await t.data(arrived("c1", SHA_C, rows=50))
    assert t.fakes.ledger.locks == [
        "dataset:a-payments",
        "trigger:fraud",
        "dataset:z-unfed",
        "dataset:churn-events",
        "trigger:churn",
        "trigger:upsell",
    ]
    assert t.fakes.ledger.batch_ids("z-unfed") == ["p1"], "a dataset no model uses is kept"


# --- DriftDetected -------------------------------------------------------------------------------


async def test_a_drift_requests_a_retrain_covering_the_ledger_as_it_is() -> None:
    t = Trainer()
    await t.data(arrived("b1", SHA_A, rows=300))
    event = drift(T0)
    tx = await t.handle(t.handlers.on_drift_detected, event)
    (sent,) = tx.emitted
    assert (sent.data.reason, sent.data.model, sent.data.trigger_event_ids) == (
        "drift",
        "churn",
        (event.id,),
    )
    recorded = t.fakes.triggers.requests[sent.id]
    assert (recorded.dataset.last_seq, recorded.requested_at) == (1, T0)
    assert t.fakes.triggers.states["churn"].last_drift_request_at == T0
    assert t.fakes.triggers.states["churn"].consumed_rows == 300


async def test_a_drift_inside_the_cooldown_is_counted_as_suppressed_and_requests_nothing() -> None:
    t = Trainer()
    await t.handle(t.handlers.on_drift_detected, drift(T0))
    tx = await t.handle(t.handlers.on_drift_detected, drift(T0 + timedelta(minutes=29)))
    assert tx.emitted == []
    assert t.fakes.triggers.suppressed["churn"] == 1
    tx = await t.handle(t.handlers.on_drift_detected, drift(T0 + timedelta(minutes=30)))
    assert tx.emitted_types() == [TrainingRequested.TYPE], "the cool-down is over"


async def test_a_drift_of_an_unknown_model_is_refused() -> None:
    t = Trainer()
    with pytest.raises(UnknownModel):
        await t.handle(t.handlers.on_drift_detected, drift(T0, model="ghost"))
    assert t.fakes.triggers.requests == {}


# --- TrainingRequested: queueing runs ------------------------------------------------------------


async def test_a_request_decided_here_queues_its_run_at_the_ledger_position_it_covered() -> None:
    t = Trainer()
    await t.data(arrived("b1", SHA_A, rows=1000))
    (request,) = t.emitted
    t.fakes.triggers.traceparents[request.id] = "00-trace-span-01"
    await t.data(arrived("b2", SHA_B, rows=10))  # the ledger moves on before the request is read
    await t.handle(t.handlers.on_training_requested, [request])
    run = t.fakes.runs.runs[f"run-{request.id}"].queued
    assert (run.ledger_seq, run.dataset, run.traceparent) == (1, "churn-events", "00-trace-span-01")
    assert run.request == request.data
    assert len(t.fakes.triggers.requests) == 1, "no second record of the request"


async def test_a_request_decided_elsewhere_covers_the_ledger_now_and_restarts_the_counter() -> None:
    t = Trainer()
    await t.data(arrived("b1", SHA_A, rows=700))
    manual = TrainingRequested(model="churn", reason="manual", requested_by="cli")
    event = new_event(manual, source="mlcp/cli")
    await t.handle(t.handlers.on_training_requested, [event])
    run = t.fakes.runs.runs[runs.run_id_for(event.id)].queued
    assert run.ledger_seq == 1
    assert t.fakes.triggers.requests[event.id].dataset == DatasetHead("churn-events", 1, 700)
    assert t.fakes.triggers.states["churn"].consumed_rows == 700
    tx = await t.data(arrived("b2", SHA_B, rows=700))
    assert tx.emitted == [], "churn counts from 700 again (700 new rows < 1000)"


async def test_a_redelivered_request_queues_one_run() -> None:
    t = Trainer()
    event = new_event(TrainingRequested(model="churn", reason="manual"), source="mlcp/cli")
    await t.handle(t.handlers.on_training_requested, [event, event])
    await t.handle(t.handlers.on_training_requested, [event])
    assert list(t.fakes.runs.runs) == [f"run-{event.id}"]


async def test_requests_decided_elsewhere_lock_their_datasets_in_name_order() -> None:
    cfg = config(fraud={"dataset": "a-payments", "label": "y", "train": "m:f"})
    t = Trainer(cfg)
    churn = new_event(TrainingRequested(model="churn", reason="manual"), source="cli")
    fraud = new_event(TrainingRequested(model="fraud", reason="manual"), source="cli")
    await t.handle(t.handlers.on_training_requested, [churn, fraud])
    assert t.fakes.ledger.locks == [
        "dataset:a-payments",
        "trigger:fraud",
        "dataset:churn-events",
        "trigger:churn",
    ]
    assert [r.queued.request_id for r in t.fakes.runs.runs.values()] == [churn.id, fraud.id]


async def test_a_request_for_an_unknown_model_is_refused() -> None:
    t = Trainer()
    event = new_event(TrainingRequested(model="ghost", reason="manual"), source="cli")
    with pytest.raises(UnknownModel):
        await t.handle(t.handlers.on_training_requested, [event])
    assert t.fakes.runs.runs == {}


async def test_a_manual_request_is_emitted_and_recorded_as_covering_the_ledger() -> None:
    t = Trainer()
    await t.data(arrived("b1", SHA_A, rows=10))
    tx = RecordingTx(service="trainer")
    request_id = await t.handlers.request_manual(tx, "churn", requested_by="alice")
    (sent,) = tx.emitted
    assert sent.id == request_id
    assert (sent.data.reason, sent.data.requested_by, sent.data.dataset) == (
        "manual",
        "alice",
        "churn-events",
    )
    recorded = t.fakes.triggers.requests[request_id]
    assert (recorded.dataset.last_seq, recorded.requested_at) == (1, sent.time)
    with pytest.raises(UnknownModel):
        await t.handlers.request_manual(RecordingTx(service="trainer"), "ghost", requested_by="a")


# --- the production projection -------------------------------------------------------------------


def registered(version: str) -> CloudEvent[Any]:
    data = ModelVersionRegistered(
        model="churn",
        version=version,
        run_id=f"run-{version}",
        metrics={"accuracy": 0.9},
        params={},
        artifact=ArtifactRef(uri=f"file:///a/{version}.skops", sha256=SHA_A, format="skops"),
        reference_profile=ReferenceProfile(rows=1, features={}),
        feature_schema=(FeatureSpec(name="x", dtype="float64"),),
        datasets=(
            DatasetRef(
                dataset="churn-events", batch_ids=("b1",), sha256=DatasetRef.fingerprint([SHA_A])
            ),
        ),
    )
    return new_event(data, source="mlcp/registry")


def promoted(version: str, alias: str = "production") -> CloudEvent[Any]:
    data = ModelPromoted(
        model="churn", version=version, alias=alias, traffic_percent=100, cause="manual"
    )
    return new_event(data, source="mlcp/registry")


async def test_a_registered_version_is_remembered_with_its_artifact() -> None:
    t = Trainer()
    await t.handle(t.handlers.on_model_registered, registered("1.0.0"))
    assert t.fakes.production.versions[("churn", "1.0.0")] == StoredArtifact(
        "1.0.0", "file:///a/1.0.0.skops", SHA_A, "skops"
    )


async def test_production_follows_promotions_to_production_only() -> None:
    t = Trainer()
    await t.handle(t.handlers.on_model_registered, registered("1.0.0"))
    event = promoted("1.0.0")
    await t.handle(t.handlers.on_model_promoted, event)
    assert t.fakes.production.production == {"churn": "1.0.0"}
    assert t.fakes.production.moved_by == {"churn": event.id}
    await t.handle(t.handlers.on_model_promoted, promoted("1.1.0", alias="canary"))
    assert t.fakes.production.production == {"churn": "1.0.0"}
    assert t.fakes.production.moved_by == {"churn": event.id}, "nothing written"
    champion = await t.fakes.production.production_artifact(None, "churn")
    assert champion is not None
    assert champion.version == "1.0.0"


async def test_production_follows_a_rollback_of_production_only() -> None:
    t = Trainer()
    await t.handle(t.handlers.on_model_promoted, promoted("1.1.0"))

    def back(alias: str, to: str | None) -> CloudEvent[Any]:
        data = ModelRolledBack(
            model="churn", alias=alias, from_version="1.1.0", to_version=to, cause="degraded"
        )
        return new_event(data, source="mlcp/registry")

    await t.handle(t.handlers.on_model_rolled_back, back("canary", None))
    assert t.fakes.production.production == {"churn": "1.1.0"}
    await t.handle(t.handlers.on_model_rolled_back, back("production", "1.0.0"))
    assert t.fakes.production.production == {"churn": "1.0.0"}


# --- a run's claim and outcome (the worker's two transactions) -----------------------------------


class Runs:
    """A worker over the trainer's fakes, with one queued request of churn."""

    def __init__(self, tmp: Path, cfg: PlatformConfig | None = None) -> None:
        self.trainer = Trainer(cfg)
        self.fakes = self.trainer.fakes
        runtime = SimpleNamespace(name="trainer", settings=Settings(artifact_root=tmp))
        self.settings = WorkerSettings(max_attempts=2)
        self.worker = Worker(
            cast(ServiceRuntime, runtime), config(), self.settings, stores=self.fakes.stores()
        )

    async def queue(self) -> CloudEvent[Any]:
        await self.trainer.data(arrived("b1", SHA_A, rows=1000))
        (request,) = self.trainer.emitted
        await self.trainer.handle(self.trainer.handlers.on_training_requested, [request])
        return request

    async def claim(self) -> tuple[runs.ClaimedRun, RecordingTx]:
        run = await self.fakes.runs.claim_run(None, worker="w", lease_s=30)
        assert run is not None
        return run, RecordingTx(service="trainer")


async def test_a_first_claim_emits_run_started_and_trains_the_covered_batches(
    tmp_path: Path,
) -> None:
    r = Runs(tmp_path)
    await r.queue()
    await r.trainer.handle(r.trainer.handlers.on_model_registered, registered("1.0.0"))
    await r.trainer.handle(r.trainer.handlers.on_model_promoted, promoted("1.0.0"))
    await r.trainer.data(arrived("b2", SHA_B, rows=10))  # after the request: not trained on
    run, tx = await r.claim()
    spec = await r.worker.begin(tx, run)
    assert tx.emitted_types() == [RunStarted.TYPE]
    assert spec is not None
    assert [b.batch_id for b in spec.batches] == ["b1"]
    assert spec.baseline is not None
    assert spec.baseline.version == "1.0.0"
    assert (spec.run_id, spec.entrypoint) == (run.run_id, "mlcp.examples.sklearn:train_logistic")


async def test_a_reclaimed_run_does_not_start_again(tmp_path: Path) -> None:
    r = Runs(tmp_path)
    await r.queue()
    run, _ = await r.claim()
    await r.fakes.runs.release_run(None, run.run_id, run.attempt)
    again, tx = await r.claim()
    assert again.attempt == 2
    assert await r.worker.begin(tx, again) is not None
    assert tx.emitted == []


async def test_a_run_whose_workers_vanished_too_often_fails_as_worker_lost(
    tmp_path: Path,
) -> None:
    r = Runs(tmp_path)
    await r.queue()
    for _ in range(r.settings.max_attempts):
        run, _ = await r.claim()
        await r.fakes.runs.release_run(None, run.run_id, run.attempt)
    run, tx = await r.claim()
    assert await r.worker.begin(tx, run) is None
    (failed,) = tx.emitted
    assert (failed.data.stage, failed.data.error_type) == ("worker", "WorkerLost")
    assert "vanished 2 times (max_attempts=2)" in failed.data.error
    assert r.fakes.runs.runs[run.run_id].status == "failed"


async def test_a_run_of_a_model_gone_from_the_config_fails_at_stage_config(
    tmp_path: Path,
) -> None:
    r = Runs(tmp_path)
    queued = QueuedRun(
        "run-x", "x", b"{}", TrainingRequested(model="gone", reason="manual"), "d", 0
    )
    await r.fakes.runs.insert_runs(None, [queued])
    run, tx = await r.claim()
    assert await r.worker.begin(tx, run) is None
    assert tx.emitted_types() == [RunStarted.TYPE, RunFailed.TYPE]
    assert (tx.emitted[1].data.stage, tx.emitted[1].data.error_type) == ("config", "UnknownModel")


async def test_a_failed_outcome_is_recorded_and_emitted_unless_fenced_off(tmp_path: Path) -> None:
    r = Runs(tmp_path)
    await r.queue()
    run, tx = await r.claim()
    failed = runs.conclude(run, ChildOutcome(1, False, False, "boom"), None, 60)
    assert isinstance(failed, Failed)
    await r.worker.record(tx, run, failed, 1.5)
    assert tx.emitted_types() == [RunFailed.TYPE]
    assert r.fakes.runs.runs[run.run_id].failure == ("train", failed.event.error, "TrainingCrashed")
    late = RecordingTx(service="trainer")
    await r.worker.record(late, run, failed, 1.5)
    assert late.emitted == [], "the run is no longer held by this attempt"


async def test_a_finished_outcome_is_recorded_and_emitted_unless_taken_over(
    tmp_path: Path,
) -> None:
    r = Runs(tmp_path)
    await r.queue()
    run, _ = await r.claim()
    conclusion = runs.conclude(run, ChildOutcome(0, False, True), ("ok", body()), 60)
    assert isinstance(conclusion, Finished)
    stale = runs.ClaimedRun(**{**run.__dict__, "attempt": run.attempt - 1})
    taken_over = RecordingTx(service="trainer")
    await r.worker.record(taken_over, stale, conclusion, 2.0)
    assert taken_over.emitted == []
    tx = RecordingTx(service="trainer")
    await r.worker.record(tx, run, conclusion, 2.0)
    assert tx.emitted_types() == [RunFinished.TYPE]
    assert r.fakes.runs.runs[run.run_id].result == conclusion.result


# --- runs.conclude: how a training child's end becomes RunFinished or RunFailed ------------------

RUN = runs.ClaimedRun("run-1", "req-1", b"{}", "churn", "manual", "churn-events", 1, 1)


def body(**changes: Any) -> dict[str, Any]:
    """A training child's result, as ``training.run_job`` returns it."""
    batch = {"batch_id": "b1", "uri": "s3://b/b1.csv", "rows": 10, "sha256": SHA_A}
    return {
        "params": {"C": 1.0},
        "seed": 0,
        "metrics": {"accuracy": 0.9},
        "baseline": None,
        "baseline_error": None,
        "datasets": [
            {
                "dataset": "churn-events",
                "batch_ids": ["b1"],
                "sha256": DatasetRef.fingerprint([SHA_A]),
                "rows": 10,
                "completeness": 1.0,
                "batches": [{**batch, "duplicates": 0}],
            }
        ],
        "batches": [
            {"dataset": "churn-events", **{k: batch[k] for k in ("batch_id", "sha256")}, "rows": 10}
        ],
        "feature_schema": [{"name": "x", "dtype": "float64"}],
        "label": "churned",
        "target": {},
        "reference_profile": {
            "rows": 10,
            "features": {"x": {"kind": "categorical", "count": 10, "frequencies": {"a": 1.0}}},
        },
        "artifact": {
            "uri": "file:///a/x.skops",
            "sha256": SHA_B,
            "format": "skops",
            "size_bytes": 1,
        },
        "entrypoint": "m:f",
        "code_version": "sha256:0123456789abcdef",
        "environment": {"python": "3.11.9", "packages": {}, "platform": "linux"},
        "duration_s": 1.0,
        **changes,
    }


def test_a_timed_out_child_is_a_training_timeout() -> None:
    outcome = runs.conclude(RUN, ChildOutcome(None, True, False), None, 60)
    assert isinstance(outcome, Failed)
    assert (outcome.event.stage, outcome.event.error_type) == ("train", "TrainingTimeout")
    assert "within 60s" in outcome.event.error


def test_a_child_killed_by_a_signal_is_a_crash_with_its_stderr() -> None:
    outcome = runs.conclude(RUN, ChildOutcome(-9, False, False, "Killed"), None, 60)
    assert isinstance(outcome, Failed)
    assert outcome.event.error_type == "TrainingCrashed"
    assert outcome.event.error == "training process died with signal 9: Killed"


def test_a_stage_that_failed_in_the_child_is_reported_with_its_stage_and_type() -> None:
    result = ("failed", {"stage": "load_data", "error": "no such file", "error_type": "BatchError"})
    outcome = runs.conclude(RUN, ChildOutcome(0, False, True), result, 60)
    assert isinstance(outcome, Failed)
    data = outcome.event
    assert (data.stage, data.error, data.error_type) == ("load_data", "no such file", "BatchError")
    assert (data.run_id, data.model, data.reason) == ("run-1", "churn", "manual")


def test_a_result_that_breaks_the_contract_fails_at_publish() -> None:
    result = ("ok", body(metrics={"accuracy": float("nan")}))
    outcome = runs.conclude(RUN, ChildOutcome(0, False, True), result, 60)
    assert isinstance(outcome, Failed)
    assert (outcome.event.stage, outcome.event.error_type) == ("publish", "ValidationError")


def test_a_good_result_is_run_finished_with_its_typed_record() -> None:
    result = ("ok", body(baseline_error="refused by the loader"))
    outcome = runs.conclude(RUN, ChildOutcome(0, False, True), result, 60)
    assert isinstance(outcome, Finished)
    assert (outcome.event.run_id, outcome.event.metrics) == ("run-1", {"accuracy": 0.9})
    assert [b.batch_id for b in outcome.result.batches] == ["b1"]
    assert outcome.result.artifact.size_bytes == 1
    assert outcome.baseline_error == "refused by the loader"


def test_errors_are_bounded_and_never_blank() -> None:
    failed = runs.run_failed(RUN, "train", "   ", None)
    assert failed.error == "unknown error"
    long = runs.run_failed(RUN, "train", "x" * 100_000, None)
    assert long.error.endswith("x")
    assert len(long.error) < 100_000
