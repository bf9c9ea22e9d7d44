"""Real training runs through real Kafka and PostgreSQL.

* a crossing trains the shipped scikit-learn example: RunStarted then RunFinished with holdout
  metrics, a content-addressed skops artifact, the reference profile and the full lineage;
* its lineage command shows batches, params, metrics, artifact, and reproducing it from that
  lineage gives the same metrics;
* once that version serves production, a manual retrain scores it on the same holdout
  (baseline), and the same batches and seed give identical metrics (reproducibility);
* ``kill -9`` of the trainer during a training: the run is claimed again when the lease
  expires, its orphaned child is gone, and it finishes exactly once;
* a graceful stop during a training hands the run back at once; another instance finishes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mlcp.contracts import (
    ModelPromoted,
    ModelVersionRegistered,
    RunFailed,
    RunFinished,
    RunStarted,
    TrainingRequested,
    new_event,
)
from mlcp.examples.sklearn import write_batches
from mlcp.trainer import run_store
from mlcp.trainer.app import build
from mlcp.trainer.batches import file_sha256, local_path
from mlcp.trainer.lineage import main as lineage_main
from mlcp.trainer.worker import WorkerSettings
from tests.conftest import Infra, free_port, wait_for
from tests.integration import test_trainer_trigger as trigger_tests
from tests.integration.test_runtime_crash import wait_ready
from tests.integration.test_trainer_trigger import drained, emitted, query, send, settings_for

pytestmark = pytest.mark.integration

start_trainer = trigger_tests.start_trainer  # the fixture, shared with the trigger tests

QUALITY = ("accuracy", "f1", "roc_auc", "train_rows", "holdout_rows")
TRAINING_TIMEOUT = 300  # a child imports scikit-learn: slow on a loaded 2-core machine


@pytest.mark.timeout(900)
async def test_a_crossing_trains_a_real_model_and_a_manual_retrain_scores_production(
    infra: Infra,
    unique: str,
    tmp_path: Path,
    start_trainer: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_for(infra, unique, tmp_path, threshold=600)
    trainer = await start_trainer(settings, workers=1)
    files = write_batches(tmp_path / "data", batches=2, rows_per_batch=300, seed=3)
    await send(settings, [new_event(f.event("churn-events"), source="test") for f in files])

    [first] = await wait_for(
        lambda: emitted(settings, RunFinished.TYPE), timeout=TRAINING_TIMEOUT, what="RunFinished"
    )
    run: RunFinished = first.data
    [started] = await emitted(settings, RunStarted.TYPE)
    assert started.data.run_id == run.run_id
    assert run.reason == "data_threshold"
    [request] = await emitted(settings, TrainingRequested.TYPE)
    assert first.causationid == request.id, "RunFinished is caused by its TrainingRequested"
    assert first.correlationid == request.correlationid
    assert run.metrics["accuracy"] > 0.9
    assert run.metrics["latency_p95_ms"] > 0
    assert {"f1", "roc_auc"} <= set(run.metrics)
    assert run.baseline is None, "nothing serves production yet"
    path = local_path(run.artifact.uri)
    assert path is not None
    assert file_sha256(path) == run.artifact.sha256
    assert path.is_relative_to(tmp_path / "artifacts")
    assert run.artifact.format == "skops"
    [dataset] = run.datasets
    assert dataset.batch_ids == tuple(f.batch_id for f in files)
    assert dataset.rows == 600
    assert len(run.reference_profile.features) == 30
    assert run.environment.packages["scikit-learn"]
    assert run.entrypoint == "mlcp.examples.sklearn:train_logistic"

    async with trainer.pool.acquire() as conn:
        lineage = await run_store.run_lineage(conn, run.run_id)
    assert lineage is not None
    assert lineage["status"] == "finished"
    assert [b["batch_id"] for b in lineage["batches"]] == list(dataset.batch_ids)
    assert lineage["params"] == {"C": 1.0, "max_iter": 200, "seed": 7}
    assert lineage["metrics"]["accuracy"] == run.metrics["accuracy"]
    assert lineage["artifact"]["sha256"] == run.artifact.sha256
    assert lineage["code_version"] == run.code_version

    # The lineage command, and reproducing the run from it: same batches and seed, same metrics.
    monkeypatch.setenv("MLCP_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("MLCP_DB_SCHEMA", str(settings.db_schema))
    assert await asyncio.to_thread(lineage_main, [run.run_id]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["reproduce"] == f"python -m mlcp.trainer.lineage {run.run_id} --reproduce"
    assert await asyncio.to_thread(lineage_main, [run.run_id, "--reproduce"]) == 0
    report = json.loads(capsys.readouterr().out)["metrics"]
    assert report["accuracy"]["equal"]
    assert report["roc_auc"]["equal"]

    # The registry registers it and it reaches production; the trainer follows.
    registered = ModelVersionRegistered(
        model="churn",
        version="1.0.0",
        run_id=run.run_id,
        metrics=run.metrics,
        params=run.params,
        artifact=run.artifact,
        reference_profile=run.reference_profile,
        feature_schema=run.feature_schema,
        datasets=run.datasets,
    )
    promoted = ModelPromoted(
        model="churn", version="1.0.0", alias="production", traffic_percent=100, cause="manual"
    )
    await send(settings, [new_event(registered, source="mlcp/registry")])
    await wait_for(lambda: query(settings, "SELECT count(*) = 1 FROM model_versions"))
    await send(settings, [new_event(promoted, source="mlcp/registry")])
    await wait_for(lambda: query(settings, "SELECT version = '1.0.0' FROM production"))

    request_id = await trainer.request_training("churn", requested_by="alice@example.com")
    finished = await wait_for(
        lambda: _two(emitted(settings, RunFinished.TYPE)), timeout=TRAINING_TIMEOUT
    )
    second: RunFinished = finished[1].data
    assert second.reason == "manual"
    assert second.run_id == f"run-{request_id}"
    assert second.baseline is not None
    assert second.baseline.version == "1.0.0"
    # Same batches, same seed: the same metrics; and production, being that same model, scores
    # the same on the same holdout.
    assert {k: second.metrics[k] for k in QUALITY} == {k: run.metrics[k] for k in QUALITY}
    for name in ("accuracy", "f1", "roc_auc"):
        assert second.baseline.metrics[name] == run.metrics[name]
    await drained(settings, TrainingRequested.TYPE)
    assert await emitted(settings, RunFailed.TYPE) == []


async def _two(pending: Any) -> Any:
    found = await pending
    return found if len(found) >= 2 else None


SLOW_MODEL = """
import os, time
from pathlib import Path
from mlcp.examples.sklearn import train_logistic

def train(X, y, params):
    with open(os.environ["SLOW_MODEL_MARKER"], "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    time.sleep(float(params.get("sleep_s", 4)))
    return train_logistic(X, y, params)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state says it is gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(900)
async def test_kill_9_during_training_is_retried_and_finishes_exactly_once(
    infra: Infra,
    unique: str,
    tmp_path: Path,
    start_trainer: Any,
    spawn: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for(infra, unique, tmp_path, threshold=100_000)
    port = free_port()
    (tmp_path / "slow_model.py").write_text(textwrap.dedent(SLOW_MODEL))
    config = tmp_path / "mlcp.yaml"
    config.write_text(
        config.read_text().replace("mlcp.examples.sklearn:train_logistic", "slow_model:train")
    )
    marker = tmp_path / "marker"
    monkeypatch.setenv("SLOW_MODEL_MARKER", str(marker))
    monkeypatch.syspath_prepend(str(tmp_path))
    env = {
        **infra.kafka_env("svc-trainer"),
        "MLCP_DATABASE_URL": settings.database_url,
        "MLCP_TOPIC_PREFIX": settings.topic_prefix,
        "MLCP_DB_SCHEMA": str(settings.db_schema),
        "MLCP_CONFIG": str(config),
        "MLCP_ARTIFACT_ROOT": str(settings.artifact_root),
        "MLCP_HTTP_PORT": str(port),
        "MLCP_LOG_FORMAT": "text",
        "MLCP_CONSUMER_SESSION_TIMEOUT_MS": "6000",
        "MLCP_TRAINER_LEASE_S": "3",
        "PYTHONPATH": str(tmp_path),
        "SLOW_MODEL_MARKER": str(marker),
    }
    victim = spawn(["-m", "mlcp.trainer"], env, "trainer")
    await wait_ready(port, victim)
    files = write_batches(tmp_path / "data", batches=2, rows_per_batch=200, seed=5)
    await send(settings, [new_event(f.event("churn-events"), source="test") for f in files])
    # The request must see both batches (the topics are consumed independently).
    await wait_for(lambda: query(settings, "SELECT count(*) = 2 FROM ledger"), what="2 batches")
    # What the CLI does: publish a manual request.
    request = new_event(
        TrainingRequested(model="churn", reason="manual", requested_by="ops"), source="mlcp/trainer"
    )
    await send(settings, [request])

    async def training() -> bool:
        assert victim.popen.poll() is None, victim.output()
        status = await query(settings, "SELECT status FROM runs")
        assert status != "failed", f"{await query(settings, 'SELECT error FROM runs')}"
        return marker.is_file() and bool(marker.read_text().strip())

    await wait_for(training, timeout=TRAINING_TIMEOUT, what="the training to start")
    child_pid = int(marker.read_text().split()[0])
    victim.popen.kill()
    assert await victim.wait_exit() == -9
    await wait_for(
        lambda: _async(not _alive(child_pid)), timeout=30, what="the orphaned child to exit"
    )
    run_id = f"run-{request.id}"
    assert await query(settings, "SELECT status FROM runs WHERE run_id = $1", run_id) == "running"

    await start_trainer(settings.model_copy(update={"config": config}), workers=1)

    async def finished() -> bool:
        status = await query(settings, "SELECT status FROM runs WHERE run_id = $1", run_id)
        assert status != "failed", f"the run failed: {await _error(settings, run_id)}"
        return bool(status == "finished")

    await wait_for(finished, timeout=TRAINING_TIMEOUT, what="the retried run to finish")
    conn = await asyncpg.connect(settings.database_url)
    try:
        attempts = await conn.fetch(
            f"SELECT attempt, outcome FROM {settings.db_schema}.run_attempts "
            "WHERE run_id = $1 ORDER BY attempt",
            run_id,
        )
    finally:
        await conn.close()
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "lost"), (2, "finished")]
    assert len(await emitted(settings, RunFinished.TYPE)) == 1
    assert len(await emitted(settings, RunStarted.TYPE)) == 1
    assert await emitted(settings, RunFailed.TYPE) == []
    assert len(marker.read_text().split()) == 2, "trained twice: killed once, then completed"


async def _async(value: Any) -> Any:
    return value


async def _error(settings: Any, run_id: str) -> Any:
    return await query(settings, "SELECT error FROM runs WHERE run_id = $1", run_id)


@pytest.mark.timeout(900)
async def test_a_graceful_stop_mid_training_hands_the_run_back(
    infra: Infra,
    unique: str,
    tmp_path: Path,
    start_trainer: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for(infra, unique, tmp_path, threshold=100_000)
    (tmp_path / "slow_model.py").write_text(textwrap.dedent(SLOW_MODEL))
    config = tmp_path / "mlcp.yaml"
    config.write_text(
        config.read_text().replace("mlcp.examples.sklearn:train_logistic", "slow_model:train")
    )
    marker = tmp_path / "marker"
    monkeypatch.setenv("SLOW_MODEL_MARKER", str(marker))
    monkeypatch.syspath_prepend(str(tmp_path))
    first = build(settings, WorkerSettings(workers=1, lease_s=600))
    await first.start()
    try:
        files = write_batches(tmp_path / "data", batches=1, rows_per_batch=200, seed=6)
        await send(settings, [new_event(f.event("churn-events"), source="test") for f in files])
        await wait_for(lambda: query(settings, "SELECT count(*) = 1 FROM ledger"), what="batch")
        request_id = await first.request_training("churn", requested_by="ops")
        await wait_for(
            lambda: _async(marker.is_file()), timeout=TRAINING_TIMEOUT, what="training to start"
        )
    finally:
        await first.stop()
    run_id = f"run-{request_id}"
    # Handed back at once, although its 600 s lease had not expired.
    assert await query(settings, "SELECT lease_until < now() FROM runs WHERE run_id = $1", run_id)
    await start_trainer(settings, workers=1)

    async def finished() -> bool:
        status = await query(settings, "SELECT status FROM runs WHERE run_id = $1", run_id)
        return bool(status == "finished")

    await wait_for(finished, timeout=TRAINING_TIMEOUT, what="the run to finish elsewhere")
    outcomes = await query(
        settings,
        "SELECT array_agg(outcome ORDER BY attempt) FROM run_attempts WHERE run_id = $1",
        run_id,
    )
    assert outcomes == ["interrupted", "finished"]
    assert len(await emitted(settings, RunFinished.TYPE)) == 1
