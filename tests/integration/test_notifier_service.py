"""The notifier through real Kafka and PostgreSQL, posting to a real local HTTP sink.

* GateFailed → exactly one Slack and one WeCom message with the right content, also when the
  event is redelivered;
* a repeated incident (promote 1.1.0, roll it back, promote it again, roll it back again) → a
  message for each of the four occurrences;
* 100 DriftDetected in a burst → the rate limits hold and every alert is represented (digest);
* the notifier SIGKILLed mid-burst while a message is in flight and restarted → nothing lost,
  the messages in flight sent again once, marked "↻ possibly repeated".
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from mlcp.contracts import CloudEvent, ModelPromoted, ModelRolledBack, new_event
from mlcp.examples.webhook_sink import Sink, serve
from mlcp.notifier.app import build
from mlcp.runtime import ServiceRuntime
from tests.conftest import Infra, wait_for
from tests.integration.kafka_tools import lag
from tests.integration.notifier_tools import (
    PATHS,
    REGISTRY,
    SLACK_PATH,
    UUID,
    WECOM_KEY,
    WECOM_PATH,
    all_settled,
    body_text,
    channel_env,
    delivery_rows,
    notifier_env,
    publish,
    query,
    start_notifier,
    tally,
    wait_notifier_ready,
    write_config,
)
from tests.unit.test_notifier_domain import (
    approval_requested,
    drift_detected,
    gate_failed,
    promoted,
    rolled_back,
    run_failed,
)

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def running_notifier(
    infra: Infra, unique: str, config: Path, env: dict[str, str]
) -> AsyncIterator[ServiceRuntime]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    runtime = build(
        infra.settings(
            "svc-notifier",
            database_url=infra.database_url,
            topic_prefix=f"t{unique}.",
            db_schema=f"notifier_{unique}",
            http_port=0,
            config=config,
            registry_url=REGISTRY,
        )
    )
    try:
        await runtime.start()
        yield runtime
    finally:
        await runtime.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def received(sink: Sink, count: int) -> Callable[[], Awaitable[bool]]:
    """A wait_for predicate: the sink has recorded at least ``count`` requests."""

    async def check() -> bool:
        return len(sink.requests) >= count

    return check


def coverage(sink: Sink, path: str, rows: list[asyncpg.Record]) -> Counter[str]:
    """How many times each event id reached ``path``: sink messages → their ref → DB rows."""
    by_message: dict[str, list[str]] = {}
    for row in rows:
        by_message.setdefault(str(row["message_id"]), []).append(row["event_id"])
    seen: Counter[str] = Counter()
    received = sink.received(path)
    assert received, f"nothing reached {path}"
    for request in received:
        refs = set(UUID.findall(body_text(request))) & set(by_message)
        assert len(refs) == 1, f"each message names exactly one delivery ref: {refs}"
        seen.update(by_message[refs.pop()])
    return seen


async def test_gate_failed_sends_one_slack_and_one_wecom_message(
    infra: Infra, unique: str, tmp_path: Path
) -> None:
    sink = Sink()
    event = gate_failed(corr="corr-e2e")
    async with (
        serve(sink) as base,
        running_notifier(infra, unique, write_config(tmp_path), channel_env(base)) as runtime,
    ):
        await publish(infra, unique, [event])
        await wait_for(received(sink, 2), what="one Slack and one WeCom message")
        # The same event redelivered (same CloudEvents id): the same alert, no new message.
        await publish(infra, unique, [event])
        group, topic = f"t{unique}.mlcp-notifier", f"t{unique}.{event.type}"

        async def consumed() -> bool:
            return await lag(infra.admin, group, topic) == 0

        await wait_for(consumed, what="the notifier to consume both records")
        schema = f"notifier_{unique}"
        await wait_for(lambda: all_settled(infra, schema, 2), what="both deliveries settled")
        transport = httpx.ASGITransport(app=runtime.http_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://notifier") as client:
            log = (await client.get("/deliveries", params={"event_id": event.id})).json()
            channels = (await client.get("/channels")).json()
            bad = await client.get("/deliveries", params={"state": "lost"})

    (slack,) = sink.received(SLACK_PATH)
    (wecom,) = sink.received(WECOM_PATH)
    blocks = json.dumps(slack["json"]["blocks"], ensure_ascii=False)
    assert slack["json"]["text"].startswith("[warning] Gate failed: churn 1.2.0 at stage quality")
    assert "observed 0.9 vs threshold &gt;= 0.92" in blocks, "(mrkdwn escapes > as &gt;)"
    assert "corr-e2e" in blocks
    assert f"{REGISTRY}/models/churn/versions/1.2.0" in blocks
    content = wecom["json"]["markdown"]["content"]
    assert wecom["json"]["msgtype"] == "markdown"
    assert wecom["query"] == f"key={WECOM_KEY}"
    assert "门禁未通过：churn 1.2.0，阶段 quality" in content
    assert "accuracy：观测值 0.9 vs 阈值 >= 0.92" in content
    assert "corr-e2e" in content
    assert sorted((d["channel"], d["state"], d["kind"]) for d in log) == [
        ("ops-wecom", "delivered", "gate.failed"),
        ("team-slack", "delivered", "gate.failed"),
    ]
    assert [(c["name"], c["kind"], c["disabled"], c["pending"]) for c in channels] == [
        ("team-slack", "slack", False, 0),
        ("ops-wecom", "wecom", False, 0),
    ]
    assert WECOM_KEY not in json.dumps(channels)
    assert "secret-slack-token" not in json.dumps(channels)
    assert bad.status_code == 400
    assert "state: must be one of" in bad.json()["error"]
    rows = await query(infra, f"SELECT channel, state, digest FROM notifier_{unique}.deliveries")
    assert sorted((r["channel"], r["state"], r["digest"]) for r in rows) == [
        ("ops-wecom", "delivered", False),
        ("team-slack", "delivered", False),
    ]


def alias_moves(model: str = "churn") -> list[CloudEvent[Any]]:
    """Promote 1.1.0, roll it back for degradation, promote 1.1.0 again, roll it back again:
    two occurrences of each fact, four events (as the registry emits them, one per move)."""
    promote = ModelPromoted(
        model=model,
        version="1.1.0",
        alias="production",
        traffic_percent=100,
        previous_version="1.0.0",
        cause="canary_healthy",
    )
    rollback = ModelRolledBack(
        model=model,
        alias="production",
        from_version="1.1.0",
        to_version="1.0.0",
        cause="degraded",
        reason="error_rate 0.09 > 0.05",
    )
    return [
        new_event(data, source="mlcp/registry", correlationid=f"corr-{n}")
        for n in (1, 2)
        for data in (promote, rollback)
    ]


async def test_a_repeated_incident_is_alerted_every_time_it_happens(
    infra: Infra, unique: str, tmp_path: Path
) -> None:
    sink = Sink()
    moves = alias_moves()
    schema = f"notifier_{unique}"
    async with (
        serve(sink) as base,
        # Rates high enough for one message per alert (no digest) to read each title.
        running_notifier(infra, unique, write_config(tmp_path, 6000, 6000), channel_env(base)),
    ):
        for event in moves:
            await publish(infra, unique, [event])
        # Promotions go to Slack only, rollbacks to Slack and WeCom: 2 + 2×2 deliveries.
        await wait_for(lambda: all_settled(infra, schema, 6), what="six deliveries")
        await publish(infra, unique, [moves[3]])  # a redelivery of the second rollback
        group = f"t{unique}.mlcp-notifier"

        async def consumed() -> bool:
            topic = f"t{unique}.{moves[3].type}"
            return await lag(infra.admin, group, topic) == 0

        await wait_for(consumed, what="the redelivered rollback consumed")
        assert await all_settled(infra, schema, 6), "a redelivery is not a new occurrence"

    slack_titles = titles(sink, SLACK_PATH)
    assert slack_titles == sorted(
        ["Promoted: churn 1.1.0 → production (100% of traffic)"] * 2
        + ["Rolled back: churn production 1.1.0 → 1.0.0"] * 2
    )
    assert titles(sink, WECOM_PATH) == ["模型已回滚：churn production 1.1.0 → 1.0.0"] * 2
    # Each message is one occurrence: the correlation ids of the two incidents both show up.
    for path in (SLACK_PATH, WECOM_PATH):
        texts = [body_text(r) for r in sink.received(path)]
        assert any("corr-1" in t for t in texts)
        assert any("corr-2" in t for t in texts)
    alerts = await query(infra, f"SELECT event_id FROM {schema}.alerts")
    assert {r["event_id"] for r in alerts} == {e.id for e in moves}
    critical = [r for r in sink.received(WECOM_PATH) if "严重" in r["json"]["markdown"]["content"]]
    assert len(critical) == 2, "the second critical rollback is not swallowed"


async def test_burst_of_100_drift_alerts_holds_rate_limits_and_represents_every_alert(
    infra: Infra, unique: str, tmp_path: Path
) -> None:
    sink = Sink()
    events = [drift_detected("churn" if i % 2 else "fraud", n=i) for i in range(100)]
    schema = f"notifier_{unique}"
    async with (
        serve(sink) as base,
        running_notifier(infra, unique, write_config(tmp_path), channel_env(base)) as runtime,
    ):
        await publish(infra, unique, events)
        await wait_for(lambda: all_settled(infra, schema, 200), timeout=60, what="200 deliveries")
        metrics = runtime.metrics.registry

    rows = await query(
        infra, f"SELECT event_id, channel, message_id, digest FROM {schema}.deliveries"
    )
    ids = {e.id for e in events}
    for channel, path, min_gap in (("team-slack", SLACK_PATH, 1.0), ("ops-wecom", WECOM_PATH, 3.0)):
        received = sink.received(path)
        mine = [r for r in rows if r["channel"] == channel]
        assert coverage(sink, path, mine) == Counter(dict.fromkeys(ids, 1)), channel
        # One by one would be 100 messages; digests make it about one per token while the
        # burst is being consumed (a slow, loaded machine consumes for longer: a wide bound).
        assert len(received) <= 25, f"{channel}: the burst was digested, not sent one by one"
        assert any(r["digest"] for r in mine), f"{channel}: a digest was sent"
        gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(received)]
        # The bucket spaces sends by 60/rate seconds (exactly: property-tested in the unit
        # tests); here the receipt times also carry each request's own latency, hence the margin.
        # Unthrottled sends would arrive milliseconds apart.
        assert all(gap >= 0.5 * min_gap for gap in gaps), f"{channel}: {gaps}"
    wecom = sink.received(WECOM_PATH)
    digests = [r["json"]["markdown"]["content"] for r in wecom if "限流汇总" in body_text(r)]
    assert all(len(content.encode("utf-8")) <= 4096 for content in digests)
    # The digests' count lines plus the single messages account for the 100 alerts.
    counted = sum(
        int(n) for content in digests for n in re.findall(r"drift\.detected · \w+: (\d+)", content)
    )
    assert counted + len(wecom) - len(digests) == 100
    sent = metrics.get_sample_value(
        "mlcp_notifier_messages_total", {"channel": "ops-wecom", "shape": "digest"}
    )
    assert sent == len(digests) >= 1


async def test_notifier_killed_mid_burst_loses_nothing_and_marks_the_repeats(
    infra: Infra, unique: str, tmp_path: Path, spawn: Callable[..., Any]
) -> None:
    sink = Sink()
    events = [drift_detected("churn", n=i) for i in range(100)]
    schema = f"notifier_{unique}"
    # Faster channels than the defaults so that the run is short and has many messages.
    config = write_config(tmp_path, slack_rate=300, wecom_rate=120)
    async with serve(sink) as base:
        env = notifier_env(
            infra, unique, config, **channel_env(base), MLCP_NOTIFIER_HTTP_TIMEOUT_S="2"
        )
        # Each channel's first answer is held back for 1.5 s: when both first messages have
        # reached the sink, both channels are blocked on an answer, so the kill lands while two
        # messages are in flight (received, not yet recorded) and the rest wait in the queue.
        for path in (SLACK_PATH, WECOM_PATH):
            sink.script(path, [{"delay_s": 1.5}])
        first, port = start_notifier(spawn, env)
        await wait_notifier_ready(first, port)
        await publish(infra, unique, events)

        async def both_in_flight() -> bool:
            return bool(sink.received(SLACK_PATH)) and bool(sink.received(WECOM_PATH))

        await wait_for(both_in_flight, what="the first message of each channel")
        first.popen.send_signal(signal.SIGKILL)
        assert await first.wait_exit() == -9
        in_flight = {path: parse_ref(sink.received(path)[0]) for path in (SLACK_PATH, WECOM_PATH)}
        before = len(sink.requests)

        second, port = start_notifier(spawn, env)
        await wait_notifier_ready(second, port)
        await wait_for(lambda: all_settled(infra, schema, 200), timeout=90, what="200 deliveries")
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        second.popen.send_signal(signal.SIGTERM)
        assert await second.wait_exit(timeout=30) == 0, second.output()

    rows = await delivery_rows(infra, schema)
    assert len(sink.requests) > before, "the restarted notifier sent the rest"
    counts = tally(sink.requests, rows, PATHS)
    assert counts.problems == []
    assert counts.lost == 0, counts.render()
    assert counts.unmarked_repeats == 0, counts.render()
    alerts = await query(infra, f"SELECT count(*) AS n FROM {schema}.alerts")
    assert alerts[0]["n"] == 100
    # The two messages in flight at the kill were received but never confirmed: their alerts
    # were sent once more, in messages tagged "↻ possibly repeated" naming the first ref.
    for channel, path in PATHS.items():
        first_ref = in_flight[path]
        carried = [r for r in rows if r["channel"] == channel and r["uncertain_refs"]]
        assert carried, f"{channel}: the message in flight is a possible repeat"
        assert all([str(u) for u in r["uncertain_refs"]] == [first_ref] for r in carried)
        repeats = [r for r in sink.received(path) if first_ref in body_text(r)][1:]
        assert repeats, f"{channel}: sent again"
        assert all("↻" in body_text(r) for r in repeats), f"{channel}: marked"
        sample = (
            f'mlcp_notifier_deliveries_total{{channel="{channel}",outcome="uncertain"}} '
            f"{float(len(carried))}"
        )
        assert sample in metrics
        assert (
            f'mlcp_notifier_possible_repeats_total{{channel="{channel}"}} {float(len(carried))}'
            in metrics
        )
        assert f"{channel}: {len(carried)} deliveries were being sent when a notifier" in (
            second.output()
        )
    for proc in (first, second):
        assert WECOM_KEY not in proc.output(), "webhook secrets never reach the logs"
        assert "secret-slack-token" not in proc.output()


def parse_ref(request: dict[str, Any]) -> str:
    """The ref of a first message (no repeat tag: its only ref)."""
    (ref,) = set(UUID.findall(body_text(request)))
    return str(ref)


ROUTED = """
notifications:
  channels:
    team-slack: {kind: slack, url_env: T_SLACK_URL, rate_per_minute: 6000}
    ops-wecom:  {kind: wecom, url_env: T_WECOM_URL, language: zh, rate_per_minute: 6000}
    pager:      {kind: webhook, url_env: T_PAGER_URL, secret_env: T_PAGER_KEY}
  routes:
    - {events: [gate.failed, model.rolled_back, drift.detected, run.failed],
       channels: [team-slack, ops-wecom]}
    - {events: [approval.requested, model.promoted], channels: [team-slack]}
    - {events: ["*"], channels: [pager], min_severity: critical}
    - {events: [drift.detected], channels: [pager], models: [fraud]}
"""


def titles(sink: Sink, path: str) -> list[str]:
    """The title of each message: Slack's header block, WeCom's '## ' line."""
    out = []
    for request in sink.received(path):
        body = request["json"]
        if "blocks" in body:
            out += [b["text"]["text"] for b in body["blocks"] if b["type"] == "header"]
        else:
            out.append(re.findall(r"^## (.*)$", body["markdown"]["content"], re.M)[0])
    return sorted(out)


async def test_each_alert_event_is_routed_by_type_severity_and_model(
    infra: Infra, unique: str, tmp_path: Path
) -> None:
    sink = Sink(secret="pager-signing-key")
    config = tmp_path / "routes.yaml"
    config.write_text(ROUTED)
    events = [
        gate_failed(),
        drift_detected("churn"),
        drift_detected("fraud"),
        rolled_back(),
        run_failed(),
        approval_requested(),
        promoted(),
    ]
    async with serve(sink) as base:
        env = {
            **channel_env(base),
            "T_PAGER_URL": f"{base}/pager",
            "T_PAGER_KEY": "pager-signing-key",
        }
        async with running_notifier(infra, unique, config, env):
            for event in events:
                await publish(infra, unique, [event])
            schema = f"notifier_{unique}"
            await wait_for(lambda: all_settled(infra, schema, 7 + 5 + 2), what="14 deliveries")

    assert [t.split(":")[0] for t in titles(sink, SLACK_PATH)] == sorted(
        [
            "Gate failed",
            "Drift detected",
            "Drift detected",
            "Rolled back",
            "Training run failed",
            "Approval requested",
            "Promoted",
        ]
    )
    assert [t.split("：")[0] for t in titles(sink, WECOM_PATH)] == sorted(
        ["门禁未通过", "检测到数据漂移", "检测到数据漂移", "模型已回滚", "训练失败"]
    )
    pager = sink.received("/pager")
    assert sorted(
        (r["json"]["alerts"][0]["kind"], r["json"]["alerts"][0]["model"]) for r in pager
    ) == [
        ("drift.detected", "fraud"),
        ("model.rolled_back", "churn"),
    ]
    assert all(r["signature_valid"] for r in pager)


async def test_without_any_usable_channel_the_process_stops_with_exit_2(
    infra: Infra, tmp_path: Path, spawn: Callable[..., Any]
) -> None:
    env = {
        **infra.kafka_env("svc-notifier"),
        "MLCP_DATABASE_URL": infra.database_url,
        "MLCP_CONFIG": str(write_config(tmp_path)),
        "T_SLACK_URL": "",
    }
    proc = spawn(["-m", "mlcp.notifier"], env, "notifier")
    assert await proc.wait_exit(timeout=60) == 2
    assert "no channel is usable (the routes need one): set T_SLACK_URL or T_WECOM_URL" in (
        proc.output()
    )


async def test_a_channel_without_its_webhook_variable_is_disabled_the_others_deliver(
    infra: Infra, unique: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink()
    event = gate_failed(corr="corr-one-channel")
    async with serve(sink) as base:
        env = {"T_SLACK_URL": channel_env(base)["T_SLACK_URL"]}
        os.environ.pop("T_WECOM_URL", None)
        async with running_notifier(infra, unique, write_config(tmp_path), env) as runtime:
            await publish(infra, unique, [event])
            await wait_for(received(sink, 1), what="the Slack message")
            schema = f"notifier_{unique}"
            await wait_for(lambda: all_settled(infra, schema, 1), what="the delivery settled")
            transport = httpx.ASGITransport(app=runtime.http_app())
            async with httpx.AsyncClient(transport=transport, base_url="http://n") as client:
                channels = (await client.get("/channels")).json()
    assert "notification channel ops-wecom is disabled: T_WECOM_URL is not set" in caplog.text
    assert len(sink.received(SLACK_PATH)) == 1
    assert sink.received(WECOM_PATH) == []
    rows = await query(infra, f"SELECT channel, state FROM notifier_{unique}.deliveries")
    assert [(r["channel"], r["state"]) for r in rows] == [("team-slack", "delivered")]
    assert [(c["name"], c["disabled"], c.get("disabled_reason")) for c in channels] == [
        ("team-slack", False, None),
        ("ops-wecom", True, "T_WECOM_URL is not set"),
    ]
