"""The delivery loop against real PostgreSQL and a real local HTTP sink: Retry-After, WeCom
45009 / 93000, 5xx backoff, permanent 4xx as dead letters, out-of-attempts, redaction of secrets
in the delivery log and the logs, a disabled channel staying disabled across a restart; a
provider answering after the timeout (sent again once, marked "↻ possibly repeated"), Slack's
fallback text escaped, and a WeCom digest of many models keeping its ref/link footer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry

import mlcp.notifier
from mlcp.contracts import RunFailed, new_event
from mlcp.examples.webhook_sink import Sink, serve
from mlcp.notifier import store
from mlcp.notifier.adapters import Sender, Target, install_redaction
from mlcp.notifier.delivery import DeliveryLoop, DeliveryMetrics, DeliveryOptions
from mlcp.notifier.domain import Alert, alert_from_event
from mlcp.notifier.render import WECOM_MARKDOWN_MAX_BYTES
from mlcp.runtime.db import create_pool
from mlcp.runtime.migrations import (
    load_migrations,
    migrate,
    runtime_migrations,
    service_migrations_dir,
)
from tests.conftest import Infra, wait_for
from tests.integration.notifier_tools import parse_copy
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


async def test_a_late_answer_is_sent_again_once_marked_as_a_possible_repeat(
    harness: Harness,
) -> None:
    path = f"/slack/{SLACK_TOKEN}"
    # The provider takes the first request and answers after the 2 s timeout.
    harness.sink.script(path, [{"status": 200, "text": "ok", "delay_s": 3.0}])
    a = alert(gate_failed())
    await harness.record(a, "team-slack")
    async with harness.loop(harness.slack()):
        await wait_for(harness.settled, timeout=30, what="the alert delivered")
    first, second = harness.sink.received(path)
    row = await harness.pool.fetchrow("SELECT * FROM deliveries")
    assert row is not None
    known = {str(row["message_id"]), *(str(u) for u in row["uncertain_refs"])}
    original, repeat = parse_copy(first, known), parse_copy(second, known)
    assert not original.marked
    assert repeat.marked, "the second copy says it may be a repeat"
    assert repeat.earlier == (original.ref,), "naming the message it may repeat"
    assert second["json"]["text"].startswith(f"↻ possibly repeated (original ref: {original.ref})")
    assert (row["state"], row["attempts"]) == ("delivered", 2)
    assert [str(u) for u in row["uncertain_refs"]] == [original.ref]
    assert str(row["message_id"]) == repeat.ref
    sample = harness.registry.get_sample_value
    labels = {"channel": "team-slack"}
    assert sample("mlcp_notifier_deliveries_total", {**labels, "outcome": "uncertain"}) == 1.0
    assert sample("mlcp_notifier_possible_repeats_total", labels) == 1.0


async def test_each_uncertainty_gives_at_most_one_marked_repeat(harness: Harness) -> None:
    path = f"/slack/{SLACK_TOKEN}"
    late = {"status": 200, "text": "ok", "delay_s": 3.0}
    harness.sink.script(path, [late, late])  # two late answers, then a prompt one
    a = alert(gate_failed())
    await harness.record(a, "team-slack")
    async with harness.loop(harness.slack()):
        await wait_for(harness.settled, timeout=40, what="the alert delivered")
    row = await harness.pool.fetchrow("SELECT * FROM deliveries")
    assert row is not None
    uncertain = [str(u) for u in row["uncertain_refs"]]
    known = {str(row["message_id"]), *uncertain}
    copies = [parse_copy(r, known) for r in harness.sink.received(path)]
    assert len(copies) == 3, "two uncertainties: the original and one repeat for each"
    assert [c.marked for c in copies] == [False, True, True]
    assert copies[1].earlier == (copies[0].ref,)
    assert copies[2].earlier == (copies[0].ref, copies[1].ref)
    assert uncertain == [copies[0].ref, copies[1].ref]
    assert row["state"] == "delivered"


async def test_slack_fallback_text_reaching_the_channel_is_escaped(harness: Harness) -> None:
    path = f"/slack/{SLACK_TOKEN}"
    hostile = "<!channel> <!here> <https://evil.example/x|click> & <b>"
    event = new_event(
        RunFailed(run_id="r-1", model="churn", reason="manual", stage="train", error=hostile),
        source="mlcp/trainer",
    )
    await harness.record(alert(event), "team-slack")
    async with harness.loop(harness.slack()):
        await wait_for(harness.settled, what="the alert delivered")
    (request,) = harness.sink.received(path)
    text = request["json"]["text"]
    assert "<" not in text, text
    assert (
        "&lt;!channel&gt; &lt;!here&gt; &lt;https://evil.example/x|click&gt; &amp; &lt;b&gt;"
        in text
    )


async def test_a_wecom_digest_of_many_models_keeps_its_ref_and_link(harness: Harness) -> None:
    alerts = [alert(drift_detected(f"model-{i:03d}-{'x' * 40}", n=i)) for i in range(300)]
    for a in alerts:
        await harness.record(a, "ops-wecom")
    slow = Target("ops-wecom", "wecom", f"{harness.base}/wecom/send?key={KEY}", rate_per_minute=60)
    async with harness.loop(slow):
        await wait_for(harness.settled, timeout=30, what="300 alerts delivered")
    rows = await harness.pool.fetch("SELECT message_id, digest FROM deliveries")
    refs = {str(r["message_id"]) for r in rows}
    digests = [
        r
        for r in harness.sink.received("/wecom/send")
        if "限流汇总" in r["json"]["markdown"]["content"]
        or "rate-limited digest" in r["json"]["markdown"]["content"]
    ]
    assert digests, "300 alerts at one message a second make a digest"
    for request in digests:
        content = request["json"]["markdown"]["content"]
        assert len(content.encode("utf-8")) <= WECOM_MARKDOWN_MAX_BYTES
        last = content.rstrip().split("\n")[-1]
        (ref,) = re.findall(r"ref: ([0-9a-f-]{36})$", last)
        assert ref in refs, "the footer's ref is the digest's message id"
        assert "http://registry.test/models" in last
        assert re.search(r"and \d+ more groups \(\d+ alerts\)", content), "counts shortened"
