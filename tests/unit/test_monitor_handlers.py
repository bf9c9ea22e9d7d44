"""Every decision of the monitor's handlers, against in-memory stores and a recording
transaction (tests/fakes): projections, ingest, drift windows, canary bakes, rollback windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from scipy import stats  # type: ignore[import-untyped]

from mlcp.contracts import (
    ArtifactRef,
    CanaryHealthy,
    CloudEvent,
    DatasetRef,
    DriftDetected,
    FeatureSpec,
    ModelDegraded,
    ModelPromoted,
    ModelRolledBack,
    ModelVersionRegistered,
    new_event,
)
from mlcp.contracts.wire import FeedbackReceivedWire, PredictionLoggedWire, WireEvent
from mlcp.monitor.app import Handlers, handlers
from mlcp.monitor.domain import NewWatch, OpenWindow, Traffic
from mlcp.monitor.metrics import MonitorMetrics
from mlcp.policy.platform import parse_platform_config
from mlcp.profiles import reference_profile
from mlcp.runtime.consumer import Refused
from tests.builders import model_promoted
from tests.fakes.monitor import Ended, FakeMonitorStore
from tests.fakes.tx import RecordingTx

pytestmark = pytest.mark.unit

MODEL, STRICT = "churn", "typed"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = parse_platform_config(
    """
models:
  churn:
    dataset: churn-events
    label: churned
    train: mlcp.examples.sklearn:train_logistic
    drift: {psi: 0.2, ks_pvalue: 0.01, share_of_features: 0.5, window_size: 40, window_max_age: 1h}
    rollout:
      bake: {min_predictions: 10, max_duration: 30m}
      degrade_if: {error_rate: "> 0.2", accuracy: "< 0.5"}
      rollback_window: 24h
  typed:
    dataset: typed-events
    label: y
    train: mlcp.examples.sklearn:train_logistic
    target: {kind: classification, type: integer}
"""
)
RNG = np.random.default_rng(5)
PROFILE = reference_profile({"x": RNG.normal(0, 1, 2000)})


@pytest.fixture
def db() -> FakeMonitorStore:
    return FakeMonitorStore()


@pytest.fixture
def monitor(db: FakeMonitorStore) -> Handlers:
    return handlers(CONFIG, MonitorMetrics(CollectorRegistry()), db.open)


def tx(cause: CloudEvent[Any] | None = None) -> RecordingTx:
    return RecordingTx(service="monitor", cause=cause)


def event(data: Any, at: datetime = T0, correlationid: str | None = None) -> CloudEvent[Any]:
    made = new_event(data, source="mlcp/registry", correlationid=correlationid)
    return made.model_copy(update={"time": at})


def registered(version: str, model: str = MODEL) -> ModelVersionRegistered:
    return ModelVersionRegistered(
        model=model,
        version=version,
        run_id=f"run-{version}",
        metrics={"accuracy": 0.9},
        params={},
        artifact=ArtifactRef(uri=f"file:///a/{version}", sha256="a" * 64, format="skops"),
        reference_profile=PROFILE,
        feature_schema=(FeatureSpec(name="x", dtype="float64"),),
        datasets=(DatasetRef(dataset="churn-events", batch_ids=("b1",), sha256="b" * 64),),
    )


def promoted(version: str, alias: str, previous: str | None = None) -> ModelPromoted:
    return model_promoted(MODEL, version, alias, previous)


def predictions(
    version: str,
    count: int,
    *,
    shift: float = 0.0,
    start: int = 0,
    at: datetime = T0,
    error: bool = False,
    features: dict[str, Any] | None = None,
    model: str = MODEL,
    prediction: Any = 1,
    xs: Any = None,
) -> list[WireEvent]:
    xs = RNG.normal(shift, 1, count) if xs is None else xs
    return [
        WireEvent(
            specversion="1.0",
            id=f"p-{version}-{start + i}",
            source="mlcp/inference",
            type="mlcp.prediction.logged.v1",
            time=at,
            data=PredictionLoggedWire(
                model=model,
                version=version,
                request_id=f"r-{version}-{start + i}",
                features={"x": float(xs[i])} if features is None else features,
                latency_ms=10.0,
                ts=at + timedelta(seconds=start + i),
                prediction=None if error else prediction,
                error=error,
            ),
        )
        for i in range(count)
    ]


def feedback(request_ids: list[str], label: Any, model: str = MODEL) -> list[WireEvent]:
    return [
        WireEvent(
            specversion="1.0",
            id=f"f-{r}",
            source="mlcp/labels",
            type="mlcp.feedback.received.v1",
            time=T0,
            data=FeedbackReceivedWire(model=model, request_id=r, label=label, ts=T0),
        )
        for r in request_ids
    ]


async def register(monitor: Handlers, *versions: str, correlationid: str = "life-1") -> None:
    for version in versions:
        await monitor.watch.on_model_version_registered(
            event(registered(version), correlationid=correlationid), tx()
        )


# --- projections -------------------------------------------------------------------------------


async def test_a_registration_keeps_the_profile_and_lifecycle_and_the_first_one_wins(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await register(monitor, "1.0.0", correlationid="life-1")
    await register(monitor, "1.0.0", correlationid="life-2")
    info = db.versions[MODEL, "1.0.0"]
    assert info.lifecycle.correlation_id == "life-1"
    assert info.metrics == {"accuracy": 0.9}
    assert info.reference_profile == PROFILE.model_dump(mode="json")


async def test_a_registration_without_correlation_id_takes_its_event_id(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    made = event(registered("1.0.0"))
    await monitor.watch.on_model_version_registered(made, tx())
    assert db.versions[MODEL, "1.0.0"].lifecycle.correlation_id == made.id


async def test_a_canary_promotion_opens_a_bake_against_production(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    db.aliases[MODEL, "production"] = "1.0.0"
    db.traffic[MODEL, "1.0.0"] = Traffic(70, OpenWindow(seq=2))
    db.traffic[MODEL, "1.1.0"] = Traffic(5, OpenWindow(seq=1))
    first = await db.open().watches.start(
        NewWatch(MODEL, "1.0.5", "canary", "1.0.0", T0, None, 0, 0)
    )
    at = T0 + timedelta(hours=1)
    await monitor.watch.on_model_promoted(event(promoted("1.1.0", "canary"), at), tx())
    assert db.aliases[MODEL, "canary"] == "1.1.0"
    assert db.ended[first] == Ended("superseded", at)
    (bake,) = db.open_watches(MODEL)
    assert (bake.version, bake.alias, bake.baseline_version) == ("1.1.0", "canary", "1.0.0")
    assert (bake.served_from, bake.baseline_from, bake.started_at, bake.until) == (5, 70, at, None)


async def test_a_canary_of_the_production_version_has_no_baseline(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    db.aliases[MODEL, "production"] = "1.0.0"
    await monitor.watch.on_model_promoted(event(promoted("1.0.0", "canary")), tx())
    (bake,) = db.open_watches(MODEL)
    assert (bake.baseline_version, bake.baseline_from, bake.served_from) == (None, None, 0)


async def test_a_production_promotion_ends_the_bake_and_opens_a_rollback_window(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await register(monitor, "1.0.0", "1.1.0")
    stores = db.open()
    db.aliases[MODEL, "canary"] = "1.1.0"
    db.traffic[MODEL, "1.1.0"] = Traffic(12, OpenWindow(seq=1))
    bake = await stores.watches.start(NewWatch(MODEL, "1.1.0", "canary", "1.0.0", T0, None, 0, 0))
    old = await stores.watches.start(
        NewWatch(MODEL, "1.0.0", "production", None, T0, T0 + timedelta(days=1), 0, None)
    )
    db.predictions.clear()
    await monitor.ingest.on_prediction_logged(predictions("1.0.0", 3, start=100), tx())
    assert db.predictions, "production's predictions are kept while it is watched"
    at = T0 + timedelta(hours=2)
    await monitor.watch.on_model_promoted(event(promoted("1.1.0", "production", "1.0.0"), at), tx())
    assert (MODEL, "canary") not in db.aliases
    assert db.aliases[MODEL, "production"] == "1.1.0"
    assert db.ended[bake] == Ended("promoted", at)
    assert db.ended[old] == Ended("superseded", at)
    (window,) = db.open_watches(MODEL)
    assert (window.version, window.alias, window.baseline_version) == (
        "1.1.0",
        "production",
        "1.0.0",
    )
    assert (window.served_from, window.until) == (12, at + timedelta(hours=24))
    assert {p.version for p in db.predictions.values()} == {"1.0.0"}, "the new one's baseline"


async def test_a_production_promotion_keeps_a_canary_alias_on_another_version(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    db.aliases[MODEL, "canary"] = "1.2.0"
    await monitor.watch.on_model_promoted(event(promoted("1.1.0", "production")), tx())
    assert db.aliases[MODEL, "canary"] == "1.2.0"


async def test_a_rollback_moves_the_alias_back_and_ends_the_watch(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    db.aliases[MODEL, "production"] = "1.1.0"
    watch = await db.open().watches.start(
        NewWatch(MODEL, "1.1.0", "production", "1.0.0", T0, T0 + timedelta(days=1), 0, None)
    )
    at = T0 + timedelta(hours=3)
    back = ModelRolledBack(
        model=MODEL, alias="production", from_version="1.1.0", to_version="1.0.0", cause="degraded"
    )
    await monitor.watch.on_model_rolled_back(event(back, at), tx())
    assert db.aliases[MODEL, "production"] == "1.0.0"
    assert db.ended[watch] == Ended("rolled_back", at)


async def test_a_rollback_to_nothing_drops_the_alias(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    db.aliases[MODEL, "canary"] = "1.1.0"
    back = ModelRolledBack(
        model=MODEL, alias="canary", from_version="1.1.0", to_version=None, cause="degraded"
    )
    await monitor.watch.on_model_rolled_back(event(back), tx())
    assert (MODEL, "canary") not in db.aliases


# --- ingest ------------------------------------------------------------------------------------


async def test_feedback_is_stored_as_label_keys_and_the_first_label_wins(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await monitor.ingest.on_feedback_received(feedback(["r1", "r2"], True), tx())
    await monitor.ingest.on_feedback_received(feedback(["r1"], 0), tx())
    assert db.feedback == {(MODEL, "r1"): "1", (MODEL, "r2"): "1"}


async def test_a_label_that_does_not_fit_a_declared_target_is_refused(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    events = feedback(["r1"], "maybe", model=STRICT) + feedback(["r2"], 1, model=STRICT)
    with pytest.raises(Refused) as refused:
        await monitor.ingest.on_feedback_received(events, tx())
    assert set(refused.value.errors) == {"f-r1"}
    assert "label of request r1" in refused.value.errors["f-r1"]
    assert not db.feedback


async def test_a_prediction_that_does_not_fit_a_declared_target_is_refused(
    monitor: Handlers,
) -> None:
    good = predictions("1.0.0", 1, model=STRICT)
    bad = predictions("1.0.0", 1, model=STRICT, start=1, prediction="maybe")
    failed = predictions("1.0.0", 1, model=STRICT, start=2, error=True)
    with pytest.raises(Refused) as refused:
        await monitor.ingest.on_prediction_logged(good + bad + failed, tx())
    assert set(refused.value.errors) == {"p-1.0.0-1"}


async def test_predictions_of_an_unregistered_version_are_counted_and_ignored(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await monitor.ingest.on_prediction_logged(predictions("9.9.9", 4), tx())
    assert db.issues == {(MODEL, "9.9.9", "unknown_version"): 4}
    assert not db.traffic


async def test_an_open_window_keeps_its_rows_as_one_chunk_per_batch(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await register(monitor, "1.0.0")
    recorder = tx()
    await monitor.ingest.on_prediction_logged(predictions("1.0.0", 15), recorder)
    await monitor.ingest.on_prediction_logged(predictions("1.0.0", 10, start=15), recorder)
    assert [c.rows for c in db.chunks[MODEL, "1.0.0", 1]] == [15, 10]
    traffic = db.traffic[MODEL, "1.0.0"]
    assert (traffic.served, traffic.window.seq, traffic.window.size) == (25, 1, 25)
    assert traffic.window.started_at == T0
    assert not db.decisions
    assert not recorder.emitted
    assert not db.predictions, "an unwatched version's predictions are not stored"


async def test_missing_features_and_bad_values_are_counted(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await register(monitor, "1.0.0")
    events = predictions("1.0.0", 2, features={}) + predictions(
        "1.0.0", 3, start=2, features={"x": "high"}
    )
    await monitor.ingest.on_prediction_logged(events, tx())
    assert db.issues[MODEL, "1.0.0", "missing_features"] == 5
    assert db.issues[MODEL, "1.0.0", "bad_value"] == 3


async def test_a_drifted_window_emits_drift_detected_in_the_versions_lifecycle(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await register(monitor, "1.0.0", correlationid="life-7")
    db.aliases[MODEL, "production"] = "1.0.0"
    recorder = tx()
    await monitor.ingest.on_prediction_logged(predictions("1.0.0", 30, shift=3.0), recorder)
    events = predictions("1.0.0", 15, shift=3.0, start=30)
    await monitor.ingest.on_prediction_logged(events, recorder)
    (drift,) = recorder.emitted
    assert isinstance(drift.data, DriftDetected)
    assert (drift.data.alias, drift.data.window.size, drift.data.share_drifted) == (
        "production",
        40,
        1.0,
    )
    assert drift.correlationid == "life-7"
    assert drift.causationid == events[9].id, "the 40th prediction closed the window"
    emitted, payload = db.decisions[MODEL, "1.0.0", "drift-1", "drift"]
    assert emitted
    assert payload["detected"] is True
    assert not db.chunks.get((MODEL, "1.0.0", 1)), "the closed window's chunks are taken"
    assert [c.rows for c in db.chunks[MODEL, "1.0.0", 2]] == [5]


async def test_a_stable_window_is_recorded_and_emits_nothing(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await register(monitor, "1.0.0")
    recorder = tx()
    like_the_reference = stats.norm.ppf((np.arange(40) + 0.5) / 40)
    await monitor.ingest.on_prediction_logged(
        predictions("1.0.0", 40, xs=like_the_reference), recorder
    )
    emitted, payload = db.decisions[MODEL, "1.0.0", "drift-1", "drift"]
    assert (emitted, payload["detected"]) == (False, False)
    assert payload["tests"], "the scores are kept with a stable window too"
    assert not recorder.emitted


async def test_a_window_decided_before_emits_nothing_again(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await register(monitor, "1.0.0")
    db.decisions[MODEL, "1.0.0", "drift-1", "drift"] = (True, {})
    recorder = tx()
    await monitor.ingest.on_prediction_logged(predictions("1.0.0", 40, shift=3.0), recorder)
    assert not recorder.emitted


async def test_a_window_closes_by_age_at_the_prediction_that_came_too_late(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await register(monitor, "1.0.0")
    await monitor.ingest.on_prediction_logged(predictions("1.0.0", 12), tx())
    late = predictions("1.0.0", 1, start=12, at=T0 + timedelta(hours=2))
    await monitor.ingest.on_prediction_logged(late, tx())
    _, payload = db.decisions[MODEL, "1.0.0", "drift-1", "drift"]
    assert payload["window"]["size"] == 12
    assert db.traffic[MODEL, "1.0.0"].window.seq == 2


# --- canary bake ---------------------------------------------------------------------------------


async def bake(monitor: Handlers, db: FakeMonitorStore) -> None:
    await register(monitor, "1.0.0", "1.1.0", correlationid="life-c")
    db.aliases[MODEL, "production"] = "1.0.0"
    await monitor.watch.on_model_promoted(event(promoted("1.1.0", "canary")), tx())


async def test_a_canary_still_baking_is_not_judged(monitor: Handlers, db: FakeMonitorStore) -> None:
    await bake(monitor, db)
    recorder = tx()
    await monitor.ingest.on_prediction_logged(predictions("1.1.0", 9), recorder)
    assert not recorder.emitted
    assert len(db.open_watches(MODEL)) == 1
    assert len(db.predictions) == 9, "a baking canary's predictions are kept"


async def test_a_canary_within_its_limits_is_healthy_caused_by_the_prediction_that_ended_it(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await bake(monitor, db)
    recorder = tx()
    events = predictions("1.1.0", 12)
    await monitor.ingest.on_prediction_logged(events, recorder)
    (healthy,) = recorder.emitted
    assert isinstance(healthy.data, CanaryHealthy)
    assert healthy.data.baseline_version == "1.0.0"
    assert healthy.causationid == events[9].id
    assert healthy.correlationid == "life-c"
    assert not db.open_watches(MODEL)
    assert db.decisions[MODEL, "1.1.0", "watch-1", "canary"][0] is True
    assert not db.predictions, "nothing is watched any more: predictions pruned"


async def test_a_canary_crossing_a_limit_is_degraded(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await bake(monitor, db)
    recorder = tx()
    events = predictions("1.1.0", 10)
    await monitor.ingest.on_feedback_received(
        feedback([e.data.request_id for e in events], 0), tx()
    )
    await monitor.ingest.on_prediction_logged(events, recorder)
    (degraded,) = recorder.emitted
    assert isinstance(degraded.data, ModelDegraded)
    assert degraded.data.alias == "canary"
    crossed = {e.metric for e in degraded.data.evidence if e.satisfied}
    assert crossed == {"accuracy"}
    assert db.ended[1].outcome == "degraded"


async def test_a_canary_starved_past_max_duration_is_degraded(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await bake(monitor, db)
    recorder = tx()
    late = predictions("1.1.0", 2, at=T0 + timedelta(minutes=31))
    await monitor.ingest.on_prediction_logged(late, recorder)
    (degraded,) = recorder.emitted
    assert isinstance(degraded.data, ModelDegraded)
    starved = degraded.data.evidence[0]
    assert (starved.metric, starved.satisfied) == ("predictions", True)
    assert degraded.causationid == late[-1].id, "time ended it: the batch's latest prediction"


async def test_a_verdict_taken_before_is_not_emitted_again(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await bake(monitor, db)
    db.decisions[MODEL, "1.1.0", "watch-1", "canary"] = (True, {})
    recorder = tx()
    await monitor.ingest.on_prediction_logged(predictions("1.1.0", 10), recorder)
    assert not recorder.emitted
    assert db.ended[1].outcome == "healthy"


# --- production rollback window ------------------------------------------------------------------


async def in_production(monitor: Handlers, db: FakeMonitorStore) -> None:
    await register(monitor, "1.0.0", "1.1.0")
    await monitor.watch.on_model_promoted(event(promoted("1.1.0", "production", "1.0.0")), tx())


async def test_healthy_production_windows_are_recorded_and_the_watch_advances(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await in_production(monitor, db)
    recorder = tx()
    await monitor.ingest.on_prediction_logged(predictions("1.1.0", 25), recorder)
    assert not recorder.emitted
    assert db.decisions[MODEL, "1.1.0", "watch-1-1", "production"] == (
        False,
        {"healthy": True, "count": 10},
    )
    assert (MODEL, "1.1.0", "watch-1-2", "production") in db.decisions
    (watch,) = db.open_watches(MODEL)
    assert watch.next_window == 3


async def test_a_degraded_production_window_emits_model_degraded(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await in_production(monitor, db)
    recorder = tx()
    events = predictions("1.1.0", 10, error=True)
    await monitor.ingest.on_prediction_logged(events, recorder)
    (degraded,) = recorder.emitted
    assert isinstance(degraded.data, ModelDegraded)
    assert (degraded.data.alias, degraded.data.baseline_version) == ("production", "1.0.0")
    assert degraded.causationid == events[-1].id
    assert db.ended[1].outcome == "degraded"


async def test_a_rollback_window_that_ran_out_passes(
    monitor: Handlers, db: FakeMonitorStore
) -> None:
    await in_production(monitor, db)
    late = T0 + timedelta(hours=25)
    recorder = tx()
    await monitor.ingest.on_prediction_logged(predictions("1.1.0", 3, at=late), recorder)
    assert not recorder.emitted
    assert db.ended[1].outcome == "passed"
    assert not db.predictions
