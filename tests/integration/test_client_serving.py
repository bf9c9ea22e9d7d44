"""mlcp.client against a running registry, real Kafka and PostgreSQL: it follows promotions and
rollbacks from the bus, routes while they happen, refuses bad artifacts and logs predictions in
Arrow batches that survive shutdown and an unreachable bus."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from mlcp.client import AsyncModelClient, PredictionLogger
from mlcp.contracts import topics
from mlcp.contracts.prediction_batch import BatchHeaders, decode_batch
from tests.conftest import Infra, wait_for
from tests.integration.client_support import (
    Switch,
    artifact,
    client_settings,
    skops_model,
    unsafe_model,
)
from tests.integration.kafka_tools import read_all
from tests.integration.registry_support import (
    Registry,
    canary_healthy,
    degraded,
    gate_passed,
    registry,
    run_finished,
    viewer_token,
)

pytestmark = pytest.mark.integration
__all__ = ["registry"]

PATH = "/models/churn/aliases/production"


async def register(reg: Registry, run_id: str, ref: dict[str, str]) -> None:
    await reg.wait_handled(await reg.publish(run_finished(run_id, artifact=ref)))


async def client_for(reg: Registry, infra: Infra, root: Path) -> AsyncModelClient:
    token, _ = await viewer_token(reg)
    return AsyncModelClient(
        "churn",
        settings=client_settings(infra, reg.settings.topic_prefix, root),
        http=reg.client(token),
        max_age_s=0.2,
    )


async def test_a_rollback_reaches_the_router_while_requests_are_in_flight(
    registry: Registry, infra: Infra, tmp_path: Path
) -> None:
    await register(registry, "run-1.0.0", skops_model(tmp_path, "v100"))
    for event in (gate_passed("1.0.0"), canary_healthy("1.0.0")):
        await registry.wait_handled(await registry.publish(event))
    await register(registry, "run-1.0.1", skops_model(tmp_path, "v101", flip=True))
    await registry.wait_handled(await registry.publish(gate_passed("1.0.1")))

    client = await client_for(registry, infra, tmp_path)
    await client.start()
    try:
        assert client.serving.version_of("production") == "1.0.0"
        assert client.serving.version_of("canary") == "1.0.1"
        answers: list[tuple[str, str]] = []
        failures: list[BaseException] = []
        stop = asyncio.Event()

        async def traffic() -> None:
            i = 0
            while not stop.is_set():
                try:
                    answer = client.predict({"x1": 0.5, "x2": -1.0}, key=f"user-{i % 500}")
                    answers.append((answer.alias, answer.version))
                except Exception as exc:
                    failures.append(exc)
                i += 1
                await asyncio.sleep(0)

        sender = asyncio.create_task(traffic())
        await wait_for(lambda: _async(len(answers) > 200), timeout=30, what="traffic flows")
        assert {"canary", "production"} <= {alias for alias, _ in answers}
        events_before = client.follower.stats.events
        await registry.wait_handled(await registry.publish(degraded("1.0.1", "canary")))
        await wait_for(
            lambda: _async(client.serving.canary is None), timeout=30, what="canary removed"
        )
        seen = len(answers)
        await wait_for(lambda: _async(len(answers) > seen + 200), timeout=30, what="more traffic")
        stop.set()
        await sender
        assert failures == []
        # Learned from the bus, not from a poll (polls are 30 s apart while Kafka is live).
        assert client.follower.stats.events > events_before
        # Every answer names the version that made it; after the swap only production answers.
        assert set(answers) <= {("production", "1.0.0"), ("canary", "1.0.1")}
        assert set(answers[seen:]) == {("production", "1.0.0")}
    finally:
        await client.close()


async def test_a_wrong_sha256_or_an_unsafe_artifact_is_refused_and_the_previous_version_serves(
    registry: Registry, infra: Infra, tmp_path: Path
) -> None:
    good = skops_model(tmp_path, "good")
    await register(registry, "run-1.0.0", good)
    for event in (gate_passed("1.0.0"), canary_healthy("1.0.0")):
        await registry.wait_handled(await registry.publish(event))
    skops_model(tmp_path, "tampered", flip=True)
    tampered = artifact(tmp_path / "tampered.skops", sha256="0" * 64)
    await register(registry, "run-1.0.1", tampered)
    await register(registry, "run-1.0.2", unsafe_model(tmp_path, "unsafe"))

    client = await client_for(registry, infra, tmp_path)
    await client.start()
    try:
        async with registry.client() as admin:
            for version, refusals, cause in (
                ("1.0.1", 1, "digest_mismatch"),
                ("1.0.2", 2, "type_refused"),
            ):
                moved = await admin.post(PATH, json={"version": version})
                assert moved.status_code == 200, moved.text
                await wait_for(
                    lambda n=refusals: _async(client.follower.stats.refused >= n),
                    timeout=30,
                    what=f"{version} refused",
                )
                assert cause in client.follower.stats.last_causes
                assert str(client.follower.stats.last_refusal).startswith(f"{version}: ")
                answer = client.predict({"x1": 1.0, "x2": 0.0})
                assert (answer.alias, answer.version) == ("production", "1.0.0")
    finally:
        await client.close()


async def test_the_logger_flushes_every_row_on_close(
    infra: Infra, unique: str, tmp_path: Path
) -> None:
    prefix = f"t{unique}."
    settings = client_settings(infra, prefix, tmp_path)
    logger = PredictionLogger(settings, "churn", batch_rows=1000, max_age_s=3600)
    await logger.start()
    for i in range(2500):
        assert logger.log(
            request_id=f"r-{i}", version="1.0.0", features={"x1": float(i)},
            prediction=i % 2, latency_ms=1.0, alias="production",
        )  # fmt: skip
    await logger.close()
    assert (logger.stats.sent, logger.buffered) == (2500, 0)

    records = await read_all(infra.admin, settings.topic(topics.PREDICTION_BATCH_LOGGED))
    tables = [decode_batch(r.value) for r in records]
    ids = [rid for table in tables for rid in table.column("request_id").to_pylist()]
    assert sorted(ids) == sorted(f"r-{i}" for i in range(2500))
    assert {BatchHeaders.decode(r.headers).subject for r in records} == {"churn"}
    assert {r.key for r in records} == {b"churn"}


async def test_with_kafka_unreachable_memory_stays_bounded_and_nothing_within_it_is_lost(
    infra: Infra, unique: str, tmp_path: Path
) -> None:
    prefix = f"t{unique}."
    switch = Switch(infra.kafka_bootstrap)
    await switch.reserve()
    settings = client_settings(infra, prefix, tmp_path, kafka_bootstrap=switch.address)
    logger = PredictionLogger(settings, "churn", batch_rows=500, max_age_s=0.05, max_buffered=2000)
    await logger.start()
    try:
        row = {"version": "1.0.0", "features": {"x1": 1.0}, "prediction": 1, "latency_ms": 1.0}
        accepted = [logger.log(request_id=f"r-{i}", **row) for i in range(5000)]  # type: ignore[arg-type]
        await wait_for(lambda: _async(logger.stats.send_errors > 0), timeout=30, what="a failure")
        assert Counter(accepted) == {True: 2000, False: 3000}
        assert (logger.buffered, logger.stats.dropped) == (2000, 3000)

        await switch.connect()  # the bus is back
        await wait_for(lambda: _async(logger.buffered == 0), timeout=60, what="backlog sent")
        assert logger.stats.sent == 2000
    finally:
        await logger.close()
        await switch.close()
    records = await read_all(infra.admin, settings.topic(topics.PREDICTION_BATCH_LOGGED))
    ids = [rid for r in records for rid in decode_batch(r.value).column("request_id").to_pylist()]
    assert sorted(ids) == sorted(f"r-{i}" for i in range(2000))


async def _async(value: bool) -> bool:
    return value
