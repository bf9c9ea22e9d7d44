"""The trainer's data-threshold and drift triggers against real Kafka and PostgreSQL.

* 999 rows → no TrainingRequested; 1000 → exactly one; redelivered / re-sent batches → still one;
* two trainer instances in one consumer group, every batch sent to every partition → one;
* a batch whose file does not match its sha256 → RunFailed naming the mismatch, ledger unchanged;
* a drift storm inside the cool-down → one TrainingRequested(reason=drift).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mlcp.contracts import (
    CloudEvent,
    DataArrived,
    DriftDetected,
    TrainingRequested,
    decode_event,
    dlq_topic,
    encode_event,
    new_event,
)
from mlcp.contracts.common import Window
from mlcp.contracts.monitoring import FeatureDrift
from mlcp.examples.sklearn import write_batches
from mlcp.runtime import Settings
from mlcp.runtime.kafka import durable_producer
from mlcp.trainer.app import TrainerRuntime, build
from mlcp.trainer.worker import WorkerSettings
from tests.conftest import Infra, wait_for
from tests.integration.kafka_tools import as_principal, lag, read_all

pytestmark = pytest.mark.integration

CONFIG = """
models:
  churn:
    dataset: churn-events
    label: churned
    train: mlcp.examples.sklearn:train_logistic
    params: {{C: 1.0, max_iter: 200, seed: 7}}
    retrain: {{min_new_rows: {threshold}, drift_cooldown: 30m}}
"""


def settings_for(infra: Infra, unique: str, tmp: Path, threshold: int = 1000) -> Settings:
    config = tmp / "mlcp.yaml"
    config.write_text(CONFIG.format(threshold=threshold))
    return infra.settings(
        "svc-trainer",
        database_url=infra.database_url,
        topic_prefix=f"t{unique}.",
        db_schema=f"trainer_{unique}",
        http_port=0,
        config=config,
        artifact_root=tmp / "artifacts",
        retry_initial_backoff_s=0.05,
        consumer_session_timeout_ms=6000,
    )


@pytest.fixture
async def start_trainer() -> AsyncIterator[Callable[..., Any]]:
    """Start trainer runtimes in the test's loop (no training workers); stop them afterwards."""
    started: list[TrainerRuntime] = []

    async def start(settings: Settings, workers: int = 0) -> TrainerRuntime:
        runtime = build(settings, WorkerSettings(workers=workers, lease_s=3))
        await runtime.start()
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        await runtime.stop()


def owned(runtime: TrainerRuntime, topic: str) -> set[Any]:
    """Partitions of ``topic`` this instance owns (DataArrived has its own batch consumer, whose
    tracker the runtime keeps beside the per-record one)."""
    trackers = [runtime.assignments, *(tracker for _, tracker, _ in runtime._batches)]
    return {tp for tracker in trackers for tp in tracker.partitions if tp.topic == topic}


def arrived(batch_id: str, rows: int, uri: str | None = None, sha: str = "a" * 64) -> DataArrived:
    return DataArrived(
        dataset="churn-events",
        batch_id=batch_id,
        uri=uri or f"file:///nonexistent/{batch_id}.csv",
        rows=rows,
        sha256=sha,
        completeness=1.0,
    )


async def send(
    settings: Settings, events: list[CloudEvent[Any]], partitions: tuple[int | None, ...] = (None,)
) -> None:
    """Publish events (to each of ``partitions``; None = by key) and wait for acks=all."""
    producer = durable_producer(as_principal(settings, "admin"), client_id="mlcp-tests")
    await producer.start()
    try:
        for event in events:
            for partition in partitions:
                await producer.send_and_wait(
                    settings.topic(event.type),
                    encode_event(event),
                    key=(event.subject or "").encode(),
                    partition=partition,
                )
    finally:
        await producer.stop()


async def query(settings: Settings, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f"SET search_path TO {settings.db_schema}")
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def emitted(settings: Settings, event_type: str) -> list[CloudEvent[Any]]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            f"SELECT payload FROM {settings.db_schema}.mlcp_outbox WHERE topic = $1 ORDER BY id",
            settings.topic(event_type),
        )
    finally:
        await conn.close()
    return [decode_event(bytes(r["payload"])) for r in rows]


async def drained(settings: Settings, event_type: str) -> None:
    """Wait until the trainer's group has committed everything on ``event_type``'s topic."""

    async def done() -> bool:
        left = await lag(
            as_principal(settings, "admin"),
            settings.group_id("trainer"),
            settings.topic(event_type),
        )
        return left == 0

    await wait_for(done, timeout=60, what=f"the trainer to consume {event_type}")


async def test_999_rows_nothing_1000_rows_one_request_redelivery_still_one(
    infra: Infra, unique: str, tmp_path: Path, start_trainer: Any
) -> None:
    settings = settings_for(infra, unique, tmp_path)
    await start_trainer(settings)
    first = [
        new_event(arrived("b1", 500), source="test"),
        new_event(arrived("b2", 499), source="test"),
    ]
    await send(settings, first)
    await wait_for(lambda: query(settings, "SELECT count(*) = 2 FROM ledger"), what="2 batches")
    await drained(settings, DataArrived.TYPE)
    assert await emitted(settings, TrainingRequested.TYPE) == [], "999 rows must not trigger"

    crossing = new_event(arrived("b3", 1), source="test")
    await send(settings, [crossing])
    requests = await wait_for(
        lambda: emitted(settings, TrainingRequested.TYPE), what="the TrainingRequested"
    )
    [request] = requests
    assert request.data.reason == "data_threshold"
    assert (request.data.rows_since_last_run, request.data.threshold) == (1000, 1000)
    assert request.data.trigger_event_ids == tuple(e.id for e in [*first, crossing])
    assert request.causationid == crossing.id

    # The same records again (same CloudEvents ids) and the same batches re-sent (new ids).
    resent = [
        new_event(arrived(b, r), source="test") for b, r in (("b1", 500), ("b2", 499), ("b3", 1))
    ]
    await send(settings, [*first, crossing, *resent])
    await drained(settings, DataArrived.TYPE)
    assert len(await emitted(settings, TrainingRequested.TYPE)) == 1
    assert await query(settings, "SELECT count(*) FROM ledger") == 3
    assert await query(settings, "SELECT sum(rows) FROM ledger") == 1000

    # Published once on the wire, and queued as exactly one run.
    async def published() -> list[Any]:
        return await read_all(settings, settings.topic(TrainingRequested.TYPE))

    assert len(await wait_for(published, what="the request on its topic")) == 1
    await drained(settings, TrainingRequested.TYPE)
    assert await query(settings, "SELECT count(*) FROM runs WHERE status = 'queued'") == 1

    # The counter restarted at the crossing: 999 more rows are again not enough.
    await send(settings, [new_event(arrived("b4", 999), source="test")])
    await wait_for(lambda: query(settings, "SELECT count(*) = 4 FROM ledger"), what="b4")
    await drained(settings, DataArrived.TYPE)
    assert len(await emitted(settings, TrainingRequested.TYPE)) == 1


async def test_two_instances_in_one_group_request_once_per_crossing(
    infra: Infra, unique: str, tmp_path: Path, start_trainer: Any
) -> None:
    settings = settings_for(infra, unique, tmp_path)
    one = await start_trainer(settings)
    two = await start_trainer(settings)

    async def both_own_partitions() -> bool:
        topic = settings.topic(DataArrived.TYPE)
        mine = [owned(r, topic) for r in (one, two)]
        return all(mine) and len(mine[0] | mine[1]) == 3

    await wait_for(both_own_partitions, timeout=60, what="the group to split the partitions")
    # Every batch reaches every partition (as three re-sends with their own event ids), so both
    # instances apply the same batches concurrently.
    batches = [arrived(f"b{i}", 100) for i in range(25)]
    events = [new_event(b, source="test") for b in batches for _ in range(3)]
    producer_batches = [events[i::3] for i in range(3)]
    for partition, group in enumerate(producer_batches):
        await send(settings, group, partitions=(partition,))
    await wait_for(lambda: query(settings, "SELECT count(*) = 25 FROM ledger"), what="25 batches")
    await drained(settings, DataArrived.TYPE)
    requests = await emitted(settings, TrainingRequested.TYPE)
    assert [r.data.rows_since_last_run for r in requests] == [1000, 1000], (
        "2500 rows with a threshold of 1000: exactly two crossings"
    )
    assert await query(settings, "SELECT count(*) FROM mlcp_batch_inbox") >= 75
    applied = [
        r.metrics.registry.get_sample_value(
            "mlcp_trainer_events_handled_total",
            {"topic": settings.topic(DataArrived.TYPE), "outcome": "applied"},
        )
        for r in (one, two)
    ]
    assert all(applied), f"both instances applied DataArrived records: {applied}"
    assert await query(settings, "SELECT sum(rows) FROM ledger") == 2500


async def test_a_batch_whose_checksum_does_not_match_is_rejected_with_a_run_failed(
    infra: Infra, unique: str, tmp_path: Path, start_trainer: Any
) -> None:
    settings = settings_for(infra, unique, tmp_path)
    await start_trainer(settings)
    [good, bad] = write_batches(tmp_path / "data", batches=2, rows_per_batch=50)
    wrong = "f" * 64
    events = [
        new_event(good.event("churn-events"), source="test"),
        new_event(arrived(bad.batch_id, bad.rows, uri=bad.uri, sha=wrong), source="test"),
    ]
    await send(settings, events)
    failures = await wait_for(lambda: emitted(settings, "mlcp.run.failed.v1"), what="the RunFailed")
    [failed] = failures
    assert failed.data.stage == "verify_data"
    assert failed.data.error_type == "ChecksumMismatch"
    assert bad.batch_id in failed.data.error
    assert wrong in failed.data.error
    assert bad.sha256 in failed.data.error
    assert failed.data.model == "churn"
    await drained(settings, DataArrived.TYPE)
    assert await query(settings, "SELECT array_agg(batch_id) FROM ledger") == [good.batch_id]
    assert await query(settings, "SELECT verified FROM ledger") is True
    reason = await query(settings, "SELECT reason FROM rejected_batches")
    assert "sha256 mismatch" in reason


async def test_a_drift_storm_inside_the_cooldown_requests_one_retrain(
    infra: Infra, unique: str, tmp_path: Path, start_trainer: Any
) -> None:
    settings = settings_for(infra, unique, tmp_path)
    await start_trainer(settings)
    window = Window(start="2026-01-01T00:00:00Z", end="2026-01-01T00:10:00Z", size=1000)
    storm = [
        new_event(
            DriftDetected(
                model="churn",
                version="1.0.0",
                alias="production",
                features=(
                    FeatureDrift(
                        name="mean radius", method="psi", score=0.4, threshold=0.2, drifted=True
                    ),
                ),
                window=window,
                share_drifted=1.0,
            ),
            source="mlcp/monitor",
        )
        for _ in range(20)
    ]
    await send(settings, storm)
    await drained(settings, DriftDetected.TYPE)
    requests = await emitted(settings, TrainingRequested.TYPE)
    assert [r.data.reason for r in requests] == ["drift"]
    assert requests[0].data.trigger_event_ids == (storm[0].id,)
    assert await query(settings, "SELECT drift_suppressed FROM model_triggers") == 19

    # A model the config does not declare: a DLQ record naming it, and the partition flows.
    ghost = json.loads(encode_event(storm[0]))
    ghost["id"], ghost["subject"], ghost["data"]["model"] = "ghost-1", "ghost", "ghost"
    await send(settings, [decode_event(json.dumps(ghost).encode())])

    async def dead_letters() -> list[Any]:
        return await read_all(
            as_principal(settings, "admin"), dlq_topic(settings.topic(DriftDetected.TYPE))
        )

    [letter] = await wait_for(dead_letters, what="the DLQ record")
    headers = dict(letter.headers)
    assert headers["mlcp-dlq-reason"] == b"handler_failed"
    assert b"model 'ghost' is not configured" in headers["mlcp-dlq-error"]
