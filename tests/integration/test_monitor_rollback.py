"""Monitor and registry together, through real Kafka and PostgreSQL: the registry promotes a
canary, the monitor finds it degraded, the registry rolls it back (choreography, no caller);
the verdict, the rollback and its alert belong to the version's lifecycle (its correlation id)."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mlcp.contracts import (
    CloudEvent,
    EventData,
    GatePassed,
    ModelDegraded,
    ModelPromoted,
    ModelRolledBack,
    PredictionLogged,
    RunFinished,
    decode_event,
    encode_event,
    new_event,
)
from mlcp.examples.webhook_sink import Sink, serve
from mlcp.registry.app import build as build_registry
from mlcp.registry.auth import RegistrySettings
from mlcp.runtime import ServiceRuntime
from tests.conftest import Infra, wait_for
from tests.contracts.contract_examples import EXAMPLES
from tests.integration.kafka_tools import as_principal, owner_source, produce, read_all
from tests.integration.test_monitor_flow import CONFIG, T0, Harness
from tests.integration.test_notifier_service import SLACK_PATH, channel_env, running_notifier

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


def failing_traffic() -> list[PredictionLogged]:
    """100 predictions of churn 1.0.0, every 4th a failed request: an error rate of 25 %."""
    return [
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


async def registry_emitted(registry: ServiceRuntime, event_type: str) -> list[object]:
    return [e.data for e in await registry_events(registry, event_type)]


async def registry_events(registry: ServiceRuntime, event_type: str) -> list[CloudEvent[Any]]:
    async with registry.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT payload FROM mlcp_outbox WHERE topic = $1 ORDER BY id",
            registry.settings.topic(event_type),
        )
    return [decode_event(bytes(r["payload"]), expected_type=event_type) for r in rows]


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

    await monitor.send(failing_traffic())
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


NOTIFIED = (
    CONFIG
    + """
notifications:
  channels:
    team-slack: {kind: slack, url_env: T_SLACK_URL}
    ops-wecom:  {kind: wecom, url_env: T_WECOM_URL}
  routes:
    - {events: [model.rolled_back], channels: [team-slack]}
"""
)


async def test_the_verdict_the_rollback_and_its_alert_carry_the_versions_lifecycle(
    infra: Infra, unique: str, tmp_path: Path, system: tuple[Harness, ServiceRuntime]
) -> None:
    """One correlation id from the run to the rollback alert: the monitor keeps the lifecycle
    of the version (from its registration) and its ModelDegraded carries it, with the
    prediction that decided the verdict as its cause; the registry's ModelRolledBack and the
    notifier's alert follow it."""
    monitor, registry = system
    config = tmp_path / "notified.yaml"
    config.write_text(NOTIFIED)
    lifecycle = f"lifecycle-{unique}"

    async def publish(data: EventData, **envelope: Any) -> CloudEvent[Any]:
        # As its owner would (consumers dead-letter an unexpected source).
        event = new_event(data, source=owner_source(data.TYPE), **envelope)
        topic = f"{monitor.prefix}{event.type}"
        await produce(infra.admin, topic, [(b"churn", encode_event(event), [])])
        return event

    sink = Sink()
    async with serve(sink) as base, running_notifier(infra, unique, config, channel_env(base)):
        run = copy.deepcopy(EXAMPLES[RunFinished.TYPE])
        run.update(run_id="run-1", model="churn", baseline=None)
        await publish(RunFinished.model_validate(run), correlationid=lifecycle)

        async def monitor_knows_version() -> bool:
            return bool(await monitor.query("SELECT 1 FROM versions WHERE version = '1.0.0'"))

        await wait_for(monitor_knows_version, timeout=60, what="the monitor to project 1.0.0")
        # The gatekeeper's GatePassed belongs to the lifecycle too; the registry's canary
        # promotion follows it.
        gates = GatePassed(model="churn", version="1.0.0", stages=("quality",))
        await publish(gates, correlationid=lifecycle)

        async def canary_watched() -> bool:
            return bool(await monitor.query("SELECT 1 FROM watches WHERE alias = 'canary'"))

        await wait_for(canary_watched, timeout=60, what="the registry's canary promotion")

        # Inference traffic has correlation ids of its own (here: none, so each its own id).
        traffic = [new_event(p, source="test/inference") for p in failing_traffic()]
        await produce(
            infra.settings("inference"),
            f"{monitor.prefix}{PredictionLogged.TYPE}",
            [(b"churn", encode_event(e), []) for e in traffic],
        )

        async def verdict() -> list[Any] | None:
            records = await read_all(infra.admin, f"{monitor.prefix}{ModelDegraded.TYPE}")
            return [decode_event(r.value) for r in records] or None

        [degraded] = await wait_for(verdict, timeout=60, what="ModelDegraded on the bus")
        assert degraded.correlationid == lifecycle
        # The 100th prediction completed the bake (min_predictions 100): it decided the verdict.
        assert degraded.causationid == traffic[-1].id
        kept = await monitor.query("SELECT correlation_id FROM versions WHERE version = '1.0.0'")
        assert kept[0]["correlation_id"] == lifecycle, "kept with the version's projection"

        async def rolled_back() -> list[CloudEvent[Any]] | None:
            return await registry_events(registry, ModelRolledBack.TYPE) or None

        [rollback] = await wait_for(rolled_back, timeout=60, what="the registry's rollback")
        assert rollback.data.from_version == "1.0.0"
        assert rollback.correlationid == lifecycle
        assert rollback.causationid == degraded.id

        # The alert is found by the lifecycle id, in the notifier's log and in the message.
        async def alerted() -> list[asyncpg.Record] | None:
            conn = await asyncpg.connect(infra.database_url)
            try:
                rows = await conn.fetch(
                    f"SELECT event_id, kind FROM notifier_{unique}.alerts"
                    " WHERE correlation_id = $1",
                    lifecycle,
                )
            except asyncpg.UndefinedTableError:
                return None
            finally:
                await conn.close()
            return list(rows) or None

        async def rollback_alerted() -> list[asyncpg.Record] | None:
            rows = await alerted() or []
            return [r for r in rows if r["kind"] == "model.rolled_back"] or None

        [alert] = await wait_for(rollback_alerted, timeout=60, what="the rollback's alert")
        assert alert["event_id"] == rollback.id
        await wait_for(lambda: _received(sink), timeout=60, what="the Slack message")
        [message] = sink.received(SLACK_PATH)
        assert lifecycle in str(message["json"])


async def _received(sink: Sink) -> bool:
    return bool(sink.received(SLACK_PATH))
