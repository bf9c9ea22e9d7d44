"""The monitor against real Kafka and PostgreSQL, run in-process: drift, canary verdicts,
restarts mid-window and bad input."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest

from mlcp.contracts import (
    ArtifactRef,
    CanaryHealthy,
    DatasetRef,
    DriftDetected,
    EventData,
    FeatureSpec,
    FeedbackReceived,
    ModelDegraded,
    ModelPromoted,
    ModelVersionRegistered,
    PredictionLogged,
    decode_event,
    dlq_topic,
    encode_event,
    new_event,
)
from mlcp.monitor.app import build
from mlcp.profiles import reference_profile
from mlcp.runtime import ServiceRuntime, Settings
from mlcp.runtime.kafka import durable_producer
from tests.builders import model_promoted
from tests.conftest import Infra, wait_for
from tests.integration.kafka_tools import owner_source, read_all

pytestmark = pytest.mark.integration

MODEL = "churn"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = """
models:
  churn:
    dataset: churn-events
    label: churned
    train: mlcp.examples.sklearn:train_logistic
    drift: {psi: 0.2, ks_pvalue: 0.01, share_of_features: 0.5, window_size: 200, window_max_age: 1h}
    rollout:
      bake: {min_predictions: 100, max_duration: 30m}
      degrade_if: {error_rate: "> 0.05", latency_p95_ms: "> 250", accuracy_drop: "> 0.1"}
      rollback_window: 24h
"""
RNG = np.random.default_rng(11)
REFERENCE = {"x": RNG.normal(0, 1, 3000), "y": RNG.normal(5, 2, 3000)}


def registered(version: str) -> ModelVersionRegistered:
    return ModelVersionRegistered(
        model=MODEL,
        version=version,
        run_id=f"run-{version}",
        metrics={"accuracy": 0.9},
        params={},
        artifact=ArtifactRef(uri=f"file:///a/{version}", sha256="a" * 64, format="skops"),
        reference_profile=reference_profile(REFERENCE),
        feature_schema=(
            FeatureSpec(name="x", dtype="float64"),
            FeatureSpec(name="y", dtype="float64"),
        ),
        datasets=(DatasetRef(dataset="churn-events", batch_ids=("b1",), sha256="b" * 64),),
    )


def promoted(version: str, alias: str, previous: str | None = None) -> ModelPromoted:
    return model_promoted(MODEL, version, alias, previous)


def predictions(
    version: str,
    count: int,
    *,
    shift: float = 0.0,
    error_every: int = 0,
    latency: float = 20.0,
    start: int = 0,
    prefix: str = "",
) -> list[PredictionLogged]:
    xs = RNG.normal(shift, 1, count)
    ys = RNG.normal(5 + 2 * shift, 2, count)
    return [
        PredictionLogged(
            model=MODEL,
            version=version,
            request_id=f"{prefix}{version}-{start + i}",
            features={"x": float(xs[i]), "y": float(ys[i])},
            prediction=None if error_every and i % error_every == 0 else 1,
            error=bool(error_every and i % error_every == 0),
            latency_ms=latency,
            ts=T0 + timedelta(seconds=start + i),
        )
        for i in range(count)
    ]


class Harness:
    """One monitor instance in this test's event loop, isolated by topic prefix and schema."""

    def __init__(self, infra: Infra, unique: str, config: Path) -> None:
        self.infra = infra
        self.prefix = f"t{unique}."
        self.schema = f"monitor_{unique}"
        self.config = config
        self.runtime: ServiceRuntime | None = None

    def settings(self) -> Settings:
        return self.infra.settings(
            "svc-monitor",
            database_url=self.infra.database_url,
            topic_prefix=self.prefix,
            db_schema=self.schema,
            http_port=0,
            config=self.config,
            retry_initial_backoff_s=0.05,
            consumer_session_timeout_ms=6000,
        )

    async def start(self) -> ServiceRuntime:
        self.runtime = build(self.settings())
        await self.runtime.start()
        return self.runtime

    async def stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None

    async def send(self, items: Sequence[EventData | bytes], topic_type: str | None = None) -> None:
        self.infra.prepare_bus(self.prefix)  # the topics may be sent to before the monitor starts
        producer = durable_producer(self.infra.admin, client_id="mlcp-tests")
        await producer.start()
        try:
            futures = []
            for item in items:
                if isinstance(item, bytes):
                    assert topic_type is not None
                    topic, value = f"{self.prefix}{topic_type}", item
                else:
                    topic = f"{self.prefix}{item.TYPE}"
                    value = encode_event(new_event(item, source=owner_source(item.TYPE)))
                futures.append(await producer.send(topic, value=value, key=MODEL.encode()))
            for future in futures:
                await future
        finally:
            await producer.stop()

    async def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.infra.database_url)
        try:
            await conn.execute(f"SET search_path TO {self.schema}")
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def emitted(self, event_type: str) -> list[Any]:
        rows = await self.query(
            "SELECT payload FROM mlcp_outbox WHERE topic = $1 ORDER BY id",
            f"{self.prefix}{event_type}",
        )
        return [decode_event(bytes(r["payload"]), expected_type=event_type).data for r in rows]

    async def wait_emitted(self, event_type: str, count: int, what: str) -> list[Any]:
        async def enough() -> list[Any] | None:
            found = await self.emitted(event_type)
            return found if len(found) >= count else None

        return await wait_for(enough, timeout=60, what=what)  # type: ignore[no-any-return]

    async def wait_served(self, version: str, served: int) -> None:
        async def done() -> bool:
            try:
                rows = await self.query("SELECT served FROM traffic WHERE version = $1", version)
            except asyncpg.UndefinedTableError:
                return False
            return bool(rows) and rows[0]["served"] >= served

        await wait_for(done, timeout=60, what=f"{served} predictions of {version} ingested")


@contextlib.asynccontextmanager
async def monitor_with(
    infra: Infra, unique: str, tmp_path: Path, config_text: str
) -> AsyncIterator[Harness]:
    """A harness on ``config_text``; stopped and its schema dropped afterwards."""
    config = tmp_path / "mlcp.yaml"
    config.write_text(config_text)
    h = Harness(infra, unique, config)
    try:
        yield h
    finally:
        await h.stop()
        conn = await asyncpg.connect(infra.database_url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {h.schema} CASCADE")
        finally:
            await conn.close()


@pytest.fixture
async def harness(infra: Infra, unique: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with monitor_with(infra, unique, tmp_path, CONFIG) as h:
        yield h


async def wait_versions(h: Harness, count: int) -> None:
    async def known() -> bool:
        try:
            return len(await h.query("SELECT 1 FROM versions")) >= count
        except asyncpg.UndefinedTableError:
            return False

    await wait_for(known, timeout=60, what=f"{count} versions registered")


async def test_drifted_traffic_emits_drift_detected_once_for_its_window(harness: Harness) -> None:
    await harness.send([registered("1.0.0")])
    await harness.start()
    await wait_versions(harness, 1)
    await harness.send(predictions("1.0.0", 200, shift=1.5))  # window 1: drifted
    await harness.send(predictions("1.0.0", 200, start=200))  # window 2: like the reference
    await harness.wait_served("1.0.0", 400)

    (drift,) = await harness.wait_emitted(DriftDetected.TYPE, 1, "DriftDetected")
    assert drift.version == "1.0.0"
    assert drift.window.size == 200
    assert drift.window.start == T0
    assert drift.window.end == T0 + timedelta(seconds=199)
    assert drift.share_drifted == 1.0
    assert {(f.name, f.method) for f in drift.features} == {
        ("x", "psi"),
        ("x", "ks"),
        ("y", "psi"),
        ("y", "ks"),
    }
    decisions = await harness.query(
        "SELECT window_id, emitted FROM decisions WHERE kind = 'drift' ORDER BY window_id"
    )
    assert [(r["window_id"], r["emitted"]) for r in decisions] == [
        ("drift-1", True),
        ("drift-2", False),
    ]
    assert len(await harness.emitted(DriftDetected.TYPE)) == 1
    assert harness.runtime is not None
    text = _metrics(harness.runtime)
    labels = 'model="churn",outcome="drifted",version="1.0.0"'
    assert f'mlcp_monitor_decisions_total{{kind="drift",{labels}}} 1.0' in text
    assert (
        'mlcp_monitor_drift_score{feature="x",method="psi",model="churn",version="1.0.0"}' in text
    )

    # The event reaches Kafka through the outbox relay.
    async def on_topic() -> bool:
        records = await read_all(harness.infra.admin, f"{harness.prefix}{DriftDetected.TYPE}")
        return len(records) == 1

    await wait_for(on_topic, timeout=30, what="DriftDetected on Kafka")


async def test_drift_detected_belongs_to_the_lifecycle_of_the_drifted_version(
    harness: Harness,
) -> None:
    """DriftDetected carries the correlation id of the version's registration, and the
    prediction that closed the window as its cause (the 200th: window_size 200)."""
    registration = new_event(
        registered("1.0.0"), source="mlcp/registry", correlationid="lifecycle-7"
    )
    await harness.send([encode_event(registration)], topic_type=ModelVersionRegistered.TYPE)
    await harness.start()
    await wait_versions(harness, 1)
    traffic = [new_event(p, source="test/inference") for p in predictions("1.0.0", 250, shift=1.5)]
    await harness.send([encode_event(e) for e in traffic], topic_type=PredictionLogged.TYPE)
    await harness.wait_emitted(DriftDetected.TYPE, 1, "DriftDetected")
    [row] = await harness.query(
        "SELECT payload FROM mlcp_outbox WHERE topic = $1",
        f"{harness.prefix}{DriftDetected.TYPE}",
    )
    drift = decode_event(bytes(row["payload"]))
    assert drift.correlationid == "lifecycle-7"
    assert drift.causationid == traffic[199].id


async def test_restart_mid_window_neither_loses_nor_double_counts(harness: Harness) -> None:
    await harness.send([registered("1.0.0")])
    await harness.start()
    await wait_versions(harness, 1)
    await harness.send(predictions("1.0.0", 120, shift=1.5))
    await harness.wait_served("1.0.0", 120)
    await harness.stop()  # mid-window: 120 of 200 rows are persisted

    await harness.send(predictions("1.0.0", 80, shift=1.5, start=120))
    await harness.start()
    await harness.wait_served("1.0.0", 200)
    (drift,) = await harness.wait_emitted(DriftDetected.TYPE, 1, "DriftDetected after restart")
    assert drift.window.size == 200, "the rows before the restart count, once"
    assert drift.window.start == T0
    assert (await harness.query("SELECT count(*) AS n FROM window_chunks"))[0]["n"] == 0
    traffic = await harness.query("SELECT served, window_seq, window_size FROM traffic")
    assert [tuple(r) for r in traffic] == [(200, 2, 0)]


async def _canary_setup(h: Harness) -> None:
    await h.send([registered("1.0.0"), registered("1.1.0")])
    await h.start()
    await wait_versions(h, 2)
    await h.send([promoted("1.0.0", "production")])
    await h.send([promoted("1.1.0", "canary")])

    async def watching() -> bool:
        rows = await h.query(
            "SELECT alias FROM watches WHERE ended_at IS NULL AND alias = 'canary'"
        )
        return bool(rows)

    await wait_for(watching, timeout=60, what="the canary watch")


async def test_a_healthy_canary_emits_canary_healthy(harness: Harness) -> None:
    await _canary_setup(harness)
    prod = predictions("1.0.0", 150, start=0)
    canary = predictions("1.1.0", 100, start=0)
    labels = [
        FeedbackReceived(model=MODEL, request_id=p.request_id, label=1, ts=T0)
        for p in prod + canary
    ]
    await harness.send(labels)  # labels before their predictions: joined at verdict time
    await harness.send(prod)
    await harness.send(canary)

    (healthy,) = await harness.wait_emitted(CanaryHealthy.TYPE, 1, "CanaryHealthy")
    assert healthy.version == "1.1.0"
    assert healthy.baseline_version == "1.0.0"
    assert healthy.window.size == 100
    measured = {e.metric: e for e in healthy.evidence}
    assert measured["error_rate"].observed == 0.0
    assert measured["latency_p95_ms"].observed == pytest.approx(20.0)
    assert measured["accuracy_drop"].observed == pytest.approx(0.0)
    assert not any(e.satisfied for e in healthy.evidence)
    assert await harness.emitted(ModelDegraded.TYPE) == []
    # More canary traffic after the verdict decides nothing again.
    await harness.send(predictions("1.1.0", 100, start=100))
    await harness.wait_served("1.1.0", 200)
    assert len(await harness.emitted(CanaryHealthy.TYPE)) == 1


async def test_restart_mid_bake_decides_the_canary_once(harness: Harness) -> None:
    await _canary_setup(harness)
    await harness.send(predictions("1.1.0", 60))
    await harness.wait_served("1.1.0", 60)
    await harness.stop()  # 60 of the 100 bake predictions are persisted
    await harness.send(predictions("1.1.0", 40, start=60))
    await harness.start()
    (healthy,) = await harness.wait_emitted(CanaryHealthy.TYPE, 1, "CanaryHealthy after restart")
    assert healthy.window.size == 100, "the predictions before the restart count, once"
    rows = await harness.query("SELECT window_id, kind FROM decisions WHERE kind = 'canary'")
    assert len(rows) == 1


async def test_a_degraded_canary_emits_model_degraded(harness: Harness) -> None:
    await _canary_setup(harness)
    await harness.send(predictions("1.1.0", 100, error_every=5, latency=400.0))

    (degraded,) = await harness.wait_emitted(ModelDegraded.TYPE, 1, "ModelDegraded")
    assert degraded.version == "1.1.0"
    assert degraded.alias == "canary"
    crossed = {e.metric: e.observed for e in degraded.evidence if e.satisfied}
    assert crossed == {"error_rate": pytest.approx(0.2), "latency_p95_ms": pytest.approx(400.0)}
    assert await harness.emitted(CanaryHealthy.TYPE) == []
    watch = await harness.query("SELECT outcome FROM watches WHERE alias = 'canary'")
    assert [r["outcome"] for r in watch] == ["degraded"]


async def test_a_fresh_production_version_is_watched_during_its_rollback_window(
    harness: Harness,
) -> None:
    await harness.send([registered("1.0.0"), registered("1.1.0")])
    await harness.start()
    await wait_versions(harness, 2)
    await harness.send([promoted("1.1.0", "production", previous="1.0.0")])
    await harness.send(predictions("1.1.0", 100))  # window 1: fine
    await harness.send(predictions("1.1.0", 100, start=100, error_every=2))  # window 2: errors

    (degraded,) = await harness.wait_emitted(ModelDegraded.TYPE, 1, "ModelDegraded")
    assert degraded.alias == "production"
    assert degraded.baseline_version == "1.0.0"
    decisions = await harness.query(
        "SELECT window_id, emitted FROM decisions WHERE kind = 'production' ORDER BY window_id"
    )
    assert [(r["window_id"].rsplit("-", 1)[1], r["emitted"]) for r in decisions] == [
        ("1", False),
        ("2", True),
    ]


async def test_bad_input_is_counted_and_reported_never_a_crash(harness: Harness) -> None:
    await harness.send([registered("1.0.0")])
    runtime = await harness.start()
    await wait_versions(harness, 1)
    unknown = predictions("9.9.9", 5)
    missing = [
        PredictionLogged(
            model=MODEL,
            version="1.0.0",
            request_id=f"m{i}",
            features={"x": 0.1},
            prediction=0,
            latency_ms=1.0,
            ts=T0,
        )
        for i in range(3)
    ]
    nan = json.loads(encode_event(new_event(predictions("1.0.0", 1, prefix="nan")[0], source="t")))
    nan_bytes = json.dumps(nan).replace('"x":', '"x": NaN, "_x":', 1).encode()
    await harness.send(unknown + missing)
    await harness.send([nan_bytes], topic_type=PredictionLogged.TYPE)
    await harness.send(predictions("1.0.0", 10, start=100))
    await harness.wait_served("1.0.0", 13)

    issues = await harness.query(
        "SELECT version, reason, count FROM ingest_issues ORDER BY version, reason"
    )
    assert [tuple(r) for r in issues] == [
        ("1.0.0", "missing_features", 3),
        ("9.9.9", "unknown_version", 5),
    ]

    async def dead_lettered() -> bool:
        topic = dlq_topic(f"{harness.prefix}{PredictionLogged.TYPE}")
        return len(await read_all(harness.infra.admin, topic)) == 1

    await wait_for(dead_lettered, timeout=30, what="the NaN record in the DLQ")
    text = _metrics(runtime)
    assert (
        'mlcp_monitor_ingest_issues_total{model="churn",reason="unknown_version",'
        'version="9.9.9"} 5.0' in text
    )
    assert (
        'mlcp_monitor_missing_values_total{feature="y",model="churn",version="1.0.0"} 3.0' in text
    )
    assert 'mlcp_monitor_predictions_total{model="churn",outcome="ok",version="1.0.0"} 13.0' in text
    assert 'mlcp_monitor_prediction_latency_ms_count{model="churn",version="1.0.0"} 13.0' in text
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.http_app())) as client:
        status = (await client.get("http://monitor/models/churn")).json()
        assert {(i["version"], i["reason"]) for i in status["issues"]} == {
            ("1.0.0", "missing_features"),
            ("9.9.9", "unknown_version"),
        }
        assert (await client.get("http://monitor/models/nope")).status_code == 404


def _metrics(runtime: ServiceRuntime) -> str:
    from prometheus_client import generate_latest

    return generate_latest(runtime.metrics.registry).decode()


async def test_an_invalid_record_does_not_spend_its_event_id_and_duplicates_count_once(
    harness: Harness,
) -> None:
    """The inbox ids are claimed while the batch decodes (mlcp.runtime.batch), from id hints:
    the id of a record that then fails the contract is released, so the corrected event is
    applied; a misleading hint (data before the envelope's id, a feature named "id") claims
    nothing for good; the same events sent again are duplicates."""
    await harness.send([registered("1.0.0")])
    await harness.start()
    await wait_versions(harness, 1)
    good = [new_event(p, source="test/inference") for p in predictions("1.0.0", 4)]
    fifth, sixth = predictions("1.0.0", 2, start=4)
    broken = json.loads(encode_event(new_event(fifth, source="test/inference", id="fifth")))
    broken["data"]["version"] = "not-semver"  # the id is fine, the event is not
    decoy = json.loads(encode_event(new_event(sixth, source="test/inference", id="sixth")))
    decoy["data"]["features"]["id"] = "decoy"
    data_first = json.dumps({"data": decoy.pop("data"), **decoy}).encode()
    assert data_first.index(b'"id": "decoy"') < data_first.index(b'"id": "sixth"')
    sent = [json.dumps(broken).encode(), data_first] + [encode_event(e) for e in good]
    await harness.send(sent, topic_type=PredictionLogged.TYPE)
    await harness.wait_served("1.0.0", 5)
    # The same five again (a producer's retry) and the corrected fifth, under the broken
    # record's id: only the fifth counts.
    corrected = new_event(fifth, source="test/inference", id="fifth")
    again = [data_first] + [encode_event(e) for e in [*good, corrected]]
    await harness.send(again, topic_type=PredictionLogged.TYPE)
    await harness.wait_served("1.0.0", 6)

    async def dead_lettered() -> bool:
        topic = dlq_topic(f"{harness.prefix}{PredictionLogged.TYPE}")
        return len(await read_all(harness.infra.admin, topic)) == 1

    await wait_for(dead_lettered, timeout=30, what="the broken record in the DLQ")
    assert (await harness.query("SELECT served FROM traffic"))[0]["served"] == 6
    claimed = await harness.query(
        "SELECT event_id FROM mlcp_batch_inbox WHERE consumer LIKE '%pred%' ORDER BY event_id"
    )
    assert sorted(r["event_id"] for r in claimed) == sorted(
        [e.id for e in good] + ["fifth", "sixth"]
    )


# --- predictions and labels compared under the model's target ----------------------------------


def answered(version: str, values: list[Any], *, prefix: str = "") -> list[PredictionLogged]:
    """Predictions of ``version`` answering ``values`` (one per request, in order)."""
    return [
        p.model_copy(update={"prediction": value})
        for p, value in zip(predictions(version, len(values), prefix=prefix), values, strict=True)
    ]


def labelled(items: list[PredictionLogged], labels: list[Any]) -> list[FeedbackReceived]:
    return [
        FeedbackReceived(model=MODEL, request_id=p.request_id, label=label, ts=T0)
        for p, label in zip(items, labels, strict=True)
    ]


async def wait_labels(h: Harness, count: int) -> None:
    """Labels are joined when the verdict is taken: have them stored before the predictions."""

    async def stored() -> bool:
        return len(await h.query("SELECT 1 FROM feedback")) >= count

    await wait_for(stored, timeout=60, what=f"{count} labels stored")


async def test_a_healthy_model_answering_true_for_label_1_is_not_rolled_back(
    harness: Harness,
) -> None:
    """The default target compares by value: a canary that answers true / false for labels
    1 / 0 is right every time (before, "true" never equalled "1": accuracy 0, rollback)."""
    await _canary_setup(harness)
    canary = answered("1.1.0", [i % 3 == 0 for i in range(100)])
    await harness.send(labelled(canary, [1 if i % 3 == 0 else 0 for i in range(100)]))
    await wait_labels(harness, 100)
    await harness.send(canary)

    (healthy,) = await harness.wait_emitted(CanaryHealthy.TYPE, 1, "CanaryHealthy")
    assert healthy.version == "1.1.0"
    measured = {e.metric: e.observed for e in healthy.evidence}
    # Live accuracy 1.0 against the version's offline 0.9.
    assert measured["accuracy_drop"] == pytest.approx(-0.1)
    assert await harness.emitted(ModelDegraded.TYPE) == []


DECLARED = CONFIG.replace(
    "    label: churned\n",
    "    label: churned\n"
    "    target: {kind: classification, type: integer, mapping: {true: 1, false: 0}}\n",
)


@pytest.fixture
async def declared(infra: Infra, unique: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """A monitor whose model declares integer classes and the spellings true / false."""
    async with monitor_with(infra, unique, tmp_path, DECLARED) as h:
        yield h


async def test_values_that_do_not_fit_the_declared_target_go_to_the_dlq_at_once(
    declared: Harness,
) -> None:
    await _canary_setup(declared)
    # 100 canary answers under the mapping (true → 1) and two that fit no integer class, sent
    # in one go with them: the two are refused, the rest of the batch is applied.
    canary = answered("1.1.0", [i % 2 == 0 for i in range(100)])
    odd = answered("1.1.0", ["maybe", 1.5], prefix="odd-")
    labels = labelled(canary, [1 if i % 2 == 0 else 0 for i in range(100)])
    bad_label = labelled(answered("1.0.0", [1], prefix="bad-"), ["yes"])
    await declared.send([*bad_label, *labels])
    await wait_labels(declared, 100)
    await declared.send([*canary[:50], *odd, *canary[50:]])

    (healthy,) = await declared.wait_emitted(CanaryHealthy.TYPE, 1, "CanaryHealthy")
    assert healthy.window.size == 100, "the refused predictions are not counted"
    measured = {e.metric: e.observed for e in healthy.evidence}
    assert measured["accuracy_drop"] == pytest.approx(-0.1), "live accuracy 1.0 under the mapping"

    async def dead_letters(event_type: str, count: int) -> list[Any] | None:
        topic = dlq_topic(f"{declared.prefix}{event_type}")
        found = await read_all(declared.infra.admin, topic)
        return found if len(found) >= count else None

    letters = await wait_for(
        lambda: dead_letters(PredictionLogged.TYPE, 2), timeout=30, what="2 predictions in the DLQ"
    )
    errors = {}
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["mlcp-dlq-reason"] == b"target_mismatch"
        assert headers["mlcp-dlq-attempts"] == b"1", "refused at once, never retried"
        event = decode_event(letter.value)
        errors[event.data.request_id] = headers["mlcp-dlq-error"].decode()
    assert errors == {
        "odd-1.1.0-0": 'prediction of request odd-1.1.0-0: "maybe" is not an integer '
        "(models.churn.target: classification, type integer, mapping true, false)",
        "odd-1.1.0-1": "prediction of request odd-1.1.0-1: 1.5 is not an integer "
        "(models.churn.target: classification, type integer, mapping true, false)",
    }
    [letter] = await wait_for(
        lambda: dead_letters(FeedbackReceived.TYPE, 1), timeout=30, what="the label in the DLQ"
    )
    assert dict(letter.headers)["mlcp-dlq-reason"] == b"target_mismatch"
    assert b'"yes" is not an integer' in dict(letter.headers)["mlcp-dlq-error"]
    feedback = await declared.query("SELECT request_id, label FROM feedback ORDER BY request_id")
    assert len(feedback) == 100
    assert {r["label"] for r in feedback} == {"0", "1"}
    assert declared.runtime is not None
    text = _metrics(declared.runtime)
    topic = f"{declared.prefix}{PredictionLogged.TYPE}"
    assert f'dead_lettered_total{{reason="target_mismatch",topic="{topic}"}} 2.0' in text
    assert f'handler_retries_total{{topic="{topic}"}}' not in text
