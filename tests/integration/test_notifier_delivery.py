"""The delivery loop against real PostgreSQL and a real local HTTP sink: Retry-After, WeCom
45009 / 93000, 5xx backoff, permanent 4xx as dead letters, out-of-attempts, redaction of secrets
in the delivery log and the logs, and a disabled channel staying disabled across a restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry

import mlcp.notifier
from mlcp.notifier import store
from mlcp.notifier.adapters import Sender, Target, install_redaction
from mlcp.notifier.delivery import DeliveryLoop, DeliveryMetrics, DeliveryOptions
from mlcp.notifier.domain import Alert, alert_from_event
from mlcp.notifier.sink import Sink, serve
from mlcp.runtime.db import create_pool
from mlcp.runtime.migrations import (
    load_migrations,
    migrate,
    runtime_migrations,
    service_migrations_dir,
)
from tests.conftest import Infra, wait_for
from tests.unit.test_notifier_domain import drift_detected, gate_failed

pytestmark = pytest.mark.integration

KEY = "wecom-robot-key-0123456789"
SLACK_TOKEN = "T1/B2/slack-token-abcdef"
OPTIONS = DeliveryOptions(
    registry_url="http://registry.test",
    http_timeout_s=2.0,
    max_attempts=3,
    retry_initial_s=0.2,
    retry_max_s=1.0,
    poll_interval_s=0.1,
)


class Harness:
    def __init__(self, pool: asyncpg.Pool, sink: Sink, base: str, schema: str) -> None:
        self.pool, self.sink, self.base, self.schema = pool, sink, base, schema
        self.registry = CollectorRegistry()
        self.metrics = DeliveryMetrics(self.registry)

    def slack(self) -> Target:
        return Target(
            "team-slack", "slack", f"{self.base}/slack/{SLACK_TOKEN}", rate_per_minute=600
        )

    def wecom(self, key: str = KEY) -> Target:
        return Target(
            "ops-wecom", "wecom", f"{self.base}/wecom/send?key={key}", rate_per_minute=600
        )

    @contextlib.asynccontextmanager
    async def loop(self, *targets: Target) -> AsyncIterator[DeliveryLoop]:
        secrets = [s for t in targets for s in t.secrets()]
        install_redaction(secrets, ("mlcp.notifier.delivery",))
        async with httpx.AsyncClient(timeout=OPTIONS.http_timeout_s) as client:
            loop = DeliveryLoop(
                pool=lambda: self.pool,
                targets={t.name: t for t in targets},
                sender=Sender(client),
                options=OPTIONS,
                metrics=self.metrics,
                schema=self.schema,
            )
            task = asyncio.create_task(loop.run())
            try:
                yield loop
            finally:
                loop.stop()
                await asyncio.wait_for(task, 10)

    async def record(self, alert: Alert, *channels: str) -> None:
        async with self.pool.acquire() as conn:
            assert await store.record_alert(conn, alert, list(channels))

    async def states(self) -> dict[tuple[str, str], tuple[str, int, str | None]]:
        rows = await self.pool.fetch(
            "SELECT event_id, channel, state, attempts, last_error FROM deliveries"
        )
        return {
            (r["event_id"], r["channel"]): (r["state"], r["attempts"], r["last_error"])
            for r in rows
        }

    async def settled(self) -> bool:
        pending = await self.pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE state IN ('pending', 'sending')"
        )
        return pending == 0


@pytest.fixture
async def harness(infra: Infra, unique: str) -> AsyncIterator[Harness]:
    schema = f"notifier_{unique}"
    migrations_dir = service_migrations_dir(mlcp.notifier.__file__)
    assert migrations_dir is not None
    pool = await create_pool(infra.database_url, schema=schema)
    async with pool.acquire() as conn:
        await migrate(conn, schema, runtime_migrations() + load_migrations(migrations_dir))
    sink = Sink()
    try:
        async with serve(sink) as base:
            yield Harness(pool, sink, base, schema)
    finally:
        await pool.close()


def alert(event: Any) -> Alert:
    value = alert_from_event(event)
    assert value is not None
    return value


async def test_slack_429_waits_for_retry_after_then_delivers(harness: Harness) -> None:
    path = f"/slack/{SLACK_TOKEN}"
    harness.sink.script(path, [{"status": 429, "headers": {"Retry-After": "1"}}])
    a = alert(gate_failed())
    await harness.record(a, "team-slack")
    async with harness.loop(harness.slack()):
        await wait_for(harness.settled, what="the alert delivered")
    first, second = harness.sink.received(path)
    assert second["time"] - first["time"] >= 0.9, "Retry-After: 1 was honoured"
    state, attempts, _ = (await harness.states())[(a.event_id, "team-slack")]
    assert (state, attempts) == ("delivered", 1), "a 429 does not spend an attempt"
    rate_limited = harness.registry.get_sample_value(
        "mlcp_notifier_deliveries_total", {"channel": "team-slack", "outcome": "rate_limited"}
    )
    assert rate_limited == 1.0


async def test_wecom_45009_is_retried_later(harness: Harness) -> None:
    harness.sink.script(
        "/wecom/send", [{"status": 200, "json": {"errcode": 45009, "errmsg": "freq"}}]
    )
    a = alert(gate_failed())
    await harness.record(a, "ops-wecom")
    async with harness.loop(harness.wecom()):
        await wait_for(harness.settled, what="the alert delivered")
    assert [r["answered"] for r in harness.sink.received("/wecom/send")] == [200, 200]
    assert (await harness.states())[(a.event_id, "ops-wecom")][0] == "delivered"


async def test_server_errors_back_off_then_deliver_or_fail_after_max_attempts(
    harness: Harness,
) -> None:
    path = f"/slack/{SLACK_TOKEN}"
    harness.sink.script(path, [{"status": 500}, {"status": 503}])
    first = alert(gate_failed("churn"))
    await harness.record(first, "team-slack")
    async with harness.loop(harness.slack()):
        await wait_for(harness.settled, what="the first alert delivered")
        assert (await harness.states())[(first.event_id, "team-slack")][:2] == ("delivered", 3)
        harness.sink.script(path, [{"status": 500}] * 3)
        second = alert(gate_failed("fraud"))
        await harness.record(second, "team-slack")
        await wait_for(harness.settled, what="the second alert given up")
    state, attempts, error = (await harness.states())[(second.event_id, "team-slack")]
    assert (state, attempts, error) == ("failed", 3, "HTTP 500")
    assert len(harness.sink.received(path)) == 6


async def test_permanent_4xx_is_a_dead_letter_and_secrets_are_redacted(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # A provider that echoes the URL (with its key) in its error: the log must not keep it.
    target = harness.wecom()
    harness.sink.script("/wecom/send", [{"status": 400, "text": f"bad request to {target.url}"}])
    a = alert(gate_failed())
    await harness.record(a, "ops-wecom")
    with caplog.at_level(logging.INFO):
        async with harness.loop(target):
            await wait_for(harness.settled, what="the alert refused")
    state, attempts, error = (await harness.states())[(a.event_id, "ops-wecom")]
    assert (state, attempts) == ("failed", 1)
    assert error is not None
    assert error.startswith("HTTP 400")
    assert KEY not in error
    assert KEY not in caplog.text
    assert "refused permanently" in caplog.text
    metrics_text = str(list(harness.registry.collect()))
    assert KEY not in metrics_text
    assert len(harness.sink.received("/wecom/send")) == 1


async def test_wecom_93000_disables_the_channel_loudly_until_its_url_changes(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.sink.script(
        "/wecom/send",
        [{"status": 200, "json": {"errcode": 93000, "errmsg": "invalid webhook url"}}],
    )
    a, b = alert(drift_detected()), alert(drift_detected())
    await harness.record(a, "ops-wecom", "team-slack")
    with caplog.at_level(logging.INFO):
        async with harness.loop(harness.wecom(), harness.slack()) as loop:
            await wait_for(harness.settled, what="the first alert settled")
            assert "ops-wecom" in loop.disabled
            await harness.record(b, "ops-wecom", "team-slack")
            await wait_for(harness.settled, what="the second alert settled")
    states = await harness.states()
    assert states[(a.event_id, "ops-wecom")][0] == "failed"
    assert states[(b.event_id, "ops-wecom")][0] == "failed"
    assert "93000" in (states[(b.event_id, "ops-wecom")][2] or "")
    assert states[(a.event_id, "team-slack")][0] == "delivered", "other channels keep working"
    assert states[(b.event_id, "team-slack")][0] == "delivered"
    assert len(harness.sink.received("/wecom/send")) == 1, "nothing more sent to a dead robot"
    assert any(
        r.levelno == logging.CRITICAL and "ops-wecom" in r.getMessage() for r in caplog.records
    )
    assert (
        harness.registry.get_sample_value(
            "mlcp_notifier_channel_disabled", {"channel": "ops-wecom"}
        )
        == 1.0
    )

    # A restart with the same URL keeps the channel disabled; a new URL enables it again.
    async with harness.loop(harness.wecom()) as loop:

        async def disabled_again() -> bool:
            return "ops-wecom" in loop.disabled

        await wait_for(disabled_again, what="the channel disabled after the restart")
    c = alert(drift_detected())
    await harness.record(c, "ops-wecom")
    async with harness.loop(harness.wecom(key="a-new-robot-key-987654")) as loop:
        await wait_for(harness.settled, what="the third alert delivered")
        assert "ops-wecom" not in loop.disabled
    assert (await harness.states())[(c.event_id, "ops-wecom")][0] == "delivered"


async def test_stopping_lets_the_message_in_flight_be_recorded(harness: Harness) -> None:
    path = f"/slack/{SLACK_TOKEN}"
    harness.sink.script(path, [{"delay_s": 1.0}])
    a = alert(gate_failed())
    await harness.record(a, "team-slack")
    async with harness.loop(harness.slack()):

        async def in_flight() -> bool:
            return bool(harness.sink.received(path))

        await wait_for(in_flight, what="the message to reach the sink")
    # Leaving the block stops the loop while the sink still holds the answer back.
    assert (await harness.states())[(a.event_id, "team-slack")][0] == "delivered"
