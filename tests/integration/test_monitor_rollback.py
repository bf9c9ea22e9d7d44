"""Monitor and registry together, through real Kafka and PostgreSQL: the registry promotes a
canary, the monitor finds it degraded, the registry rolls it back (choreography, no caller)."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from mlcp.contracts import (
    GatePassed,
    ModelDegraded,
    ModelPromoted,
    ModelRolledBack,
    PredictionLogged,
    RunFinished,
    decode_event,
)
from mlcp.registry.app import build as build_registry
from mlcp.registry.auth import RegistrySettings
from mlcp.runtime import ServiceRuntime
from tests.conftest import Infra, wait_for
from tests.contracts.contract_examples import EXAMPLES
from tests.integration.kafka_tools import as_principal
from tests.integration.test_monitor_flow import CONFIG, T0, Harness

pytestmark = pytest.mark.integration


@pytest.fixture
async def system(
    infra: Infra, unique: str, tmp_path: Path
) -> AsyncIterator[tuple[Harness, ServiceRuntime]]:
    config = tmp_path / "mlcp.yaml"
    config.write_text(CONFIG)
    monitor = Harness(infra, unique, config)
    settings = as_principal(monitor.settings(), "svc-registry").model_copy(
        update={"db_schema": f"registry_{unique}"}
    )
    registry = build_registry(settings, RegistrySettings(bootstrap_token="bootstrap-" + "x" * 40))
    await registry.start()
    await monitor.start()
    try:
        yield monitor, registry
    finally:
        await monitor.stop()
        await registry.stop()
        conn = await asyncpg.connect(infra.database_url)
        try:
            for schema in (monitor.schema, f"registry_{unique}"):
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


async def registry_emitted(registry: ServiceRuntime, event_type: str) -> list[object]:
    async with registry.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT payload FROM mlcp_outbox WHERE topic = $1 ORDER BY id",
            registry.settings.topic(event_type),
        )
    return [decode_event(bytes(r["payload"]), expected_type=event_type).data for r in rows]


async def test_a_degraded_canary_is_rolled_back_by_the_registry(
    system: tuple[Harness, ServiceRuntime],
) -> None:
    monitor, registry = system
    run = copy.deepcopy(EXAMPLES[RunFinished.TYPE])
    run.update(run_id="run-1", model="churn", baseline=None)
    await monitor.send([RunFinished.model_validate(run)])  # → registry → ModelVersionRegistered

    async def monitor_knows_version() -> bool:
        return bool(await monitor.query("SELECT 1 FROM versions WHERE version = '1.0.0'"))

    await wait_for(monitor_knows_version, timeout=60, what="the monitor to project 1.0.0")
    await monitor.send([GatePassed(model="churn", version="1.0.0", stages=("quality",))])

    async def canary_watched() -> bool:
        rows = await monitor.query("SELECT 1 FROM watches WHERE alias = 'canary'")
        return bool(rows)

    await wait_for(canary_watched, timeout=60, what="the registry's canary promotion")
    (promotion,) = await registry_emitted(registry, ModelPromoted.TYPE)
    assert promotion.alias == "canary"  # type: ignore[attr-defined]

    await monitor.send(
        [
            PredictionLogged(
                model="churn",
                version="1.0.0",
                request_id=f"r{i}",
                features={"tenure_months": 12.0, "plan": "basic"},
                prediction=None if i % 4 == 0 else True,
                error=i % 4 == 0,
                latency_ms=15.0,
                ts=T0 + timedelta(seconds=i),
            )
            for i in range(100)
        ]
    )
    (degraded,) = await monitor.wait_emitted(ModelDegraded.TYPE, 1, "ModelDegraded")
    assert degraded.alias == "canary"

    async def rolled_back() -> list[object] | None:
        found = await registry_emitted(registry, ModelRolledBack.TYPE)
        return found or None

    (rollback,) = await wait_for(rolled_back, timeout=60, what="the registry's ModelRolledBack")
    assert rollback.from_version == "1.0.0"  # type: ignore[attr-defined]
    assert rollback.cause == "degraded"  # type: ignore[attr-defined]

    async def monitor_followed() -> bool:
        rows = await monitor.query("SELECT 1 FROM aliases WHERE alias = 'canary'")
        return not rows

    await wait_for(monitor_followed, timeout=60, what="the monitor to drop the canary alias")
