"""The notifier killed with SIGKILL at chosen moments, against real Kafka, PostgreSQL and a real
local HTTP sink standing in for Slack and WeCom: no alert is lost, and an alert reaches a
channel twice only when the second message says "↻ possibly repeated" (at most once per
uncertainty).

* killed between claiming rows and posting them (crash point ``notifier.after_claim``);
* a burst with a kill in each phase — after a claim, while a message is in flight, after the
  channel answered but before the answer was recorded (``notifier.after_send``), after the
  consumer's transaction but before its offset commit (``consumer.after_commit``) — then the
  counts delivered once / repeated (marked) / lost. Print them with
  ``uv run pytest tests/integration/test_notifier_crash.py -k burst -s``.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlcp.contracts import CloudEvent
from mlcp.examples.webhook_sink import Sink, serve
from mlcp.notifier.delivery import AFTER_CLAIM, AFTER_SEND
from mlcp.runtime.faults import CONSUMER_AFTER_COMMIT
from tests.conftest import Infra, wait_for
from tests.integration.notifier_tools import (
    PATHS,
    SLACK_PATH,
    WECOM_PATH,
    all_settled,
    channel_env,
    delivery_rows,
    notifier_env,
    parse_copy,
    publish,
    query,
    start_notifier,
    tally,
    wait_notifier_ready,
    write_config,
)
from tests.unit.test_notifier_domain import drift_detected, gate_failed

pytestmark = pytest.mark.integration

# A short HTTP timeout makes the lease after which a dead process's rows are sent again short
# (2 × timeout + 5 s = 9 s).
HTTP_TIMEOUT_S = "2"

SLACK_ONLY = """
notifications:
  channels:
    team-slack: {kind: slack, url_env: T_SLACK_URL}
  routes:
    - {events: [gate.failed], channels: [team-slack]}
"""


async def killed_at(spawn: Callable[..., Any], env: dict[str, str], point: str) -> Any:
    """Start a notifier that SIGKILLs itself at the crash point ``point``; wait for it."""
    proc, _ = start_notifier(spawn, {**env, "MLCP_CRASH_AT": point})
    code = await proc.wait_exit(timeout=120)
    assert code == -9, f"expected a kill at {point}, exit {code}:\n{proc.output()}"
    return proc


async def test_killed_between_claim_and_send_loses_nothing_and_marks_at_most_one_repeat(
    infra: Infra, unique: str, tmp_path: Path, spawn: Callable[..., Any]
) -> None:
    sink = Sink()
    config = tmp_path / "slack.yaml"
    config.write_text(SLACK_ONLY)
    schema = f"notifier_{unique}"
    events = [gate_failed(version=f"1.{i}.0") for i in range(20)]
    async with serve(sink) as base:
        env = notifier_env(
            infra, unique, config, **channel_env(base), MLCP_NOTIFIER_HTTP_TIMEOUT_S=HTTP_TIMEOUT_S
        )
        await publish(infra, unique, events)
        # A real kill -9 of the notifier process with rows committed as 'sending', unposted.
        await killed_at(spawn, env, AFTER_CLAIM)
        assert sink.requests == [], "killed before anything was posted"
        claimed = await query(
            infra, f"SELECT event_id, message_id FROM {schema}.deliveries WHERE state = 'sending'"
        )
        assert claimed, "the kill left claimed rows behind"
        (claim_ref,) = {str(r["message_id"]) for r in claimed}

        proc, port = start_notifier(spawn, env)
        await wait_notifier_ready(proc, port)
        await wait_for(
            lambda: all_settled(infra, schema, 20), timeout=90, what="20 deliveries delivered"
        )
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        proc.popen.send_signal(signal.SIGTERM)
        assert await proc.wait_exit(timeout=30) == 0, proc.output()

    rows = await delivery_rows(infra, schema)
    counts = tally(sink.requests, rows, {"team-slack": SLACK_PATH})
    assert counts.problems == []
    assert counts.lost == 0, counts.render()
    assert counts.counts["repeated, marked"] == 0, "the claimed message never reached Slack"
    assert counts.unmarked_repeats == 0
    # The claimed alerts were sent once, in a message that says it may repeat the claim's ref
    # (the notifier cannot tell a kill before the POST from a kill during it).
    marked = counts.counts["delivered once, marked (the earlier send never arrived)"]
    assert marked == len(claimed), counts.render()
    assert counts.counts["delivered once"] == 20 - len(claimed)
    known = {str(r["message_id"]) for r in rows} | {claim_ref}
    tagged = [parse_copy(r, known) for r in sink.requests if "↻" in str(r.get("json"))]
    assert tagged
    assert all(c.earlier == (claim_ref,) for c in tagged), "the tag names the claimed ref"
    repeats = f'mlcp_notifier_possible_repeats_total{{channel="team-slack"}} {float(marked)}'
    assert repeats in metrics


async def test_burst_with_kills_in_each_phase_loses_nothing(
    infra: Infra, unique: str, tmp_path: Path, spawn: Callable[..., Any]
) -> None:
    sink = Sink()
    schema = f"notifier_{unique}"
    config = write_config(tmp_path, slack_rate=300, wecom_rate=120)

    def wave(n: int, start: int) -> tuple[list[CloudEvent[Any]], list[CloudEvent[Any]]]:
        drifts = [drift_detected(("churn", "fraud")[i % 2], n=start + i) for i in range(n)]
        gates = [gate_failed(version=f"2.{start + i}.0") for i in range(n // 4)]
        return drifts, gates

    published: list[CloudEvent[Any]] = []

    async def send(n: int) -> None:
        for events in wave(n, len(published)):
            await publish(infra, unique, events)
            published.extend(events)

    kills: list[str] = []
    async with serve(sink) as base:
        env = notifier_env(
            infra, unique, config, **channel_env(base), MLCP_NOTIFIER_HTTP_TIMEOUT_S=HTTP_TIMEOUT_S
        )
        for cycle in range(2):
            # 1. Between claim and send.
            await send(80)
            await killed_at(spawn, env, AFTER_CLAIM)
            kills.append(f"{cycle}: {AFTER_CLAIM}")

            # 2. While a message is in flight: the sink holds the first answer of each channel.
            for path in PATHS.values():
                sink.script(path, [{"delay_s": 1.5}])
            before = len(sink.requests)
            proc, _ = start_notifier(spawn, env)

            async def posted(before: int = before) -> bool:
                return len(sink.requests) > before

            await wait_for(posted, timeout=120, what="a message in flight")
            proc.popen.send_signal(signal.SIGKILL)
            assert await proc.wait_exit() == -9
            kills.append(f"{cycle}: in flight")

            # 3. After the channel answered, before the answer was recorded.
            await send(80)
            await killed_at(spawn, env, AFTER_SEND)
            kills.append(f"{cycle}: {AFTER_SEND}")

            # 4. After the consumer's transaction, before its offset commit (alerts recorded).
            await send(40)
            await killed_at(spawn, env, CONSUMER_AFTER_COMMIT)
            kills.append(f"{cycle}: {CONSUMER_AFTER_COMMIT}")

        proc, port = start_notifier(spawn, env)
        await wait_notifier_ready(proc, port)
        expected = 2 * len(published)  # every event is routed to both channels
        await wait_for(
            lambda: all_settled(infra, schema, expected),
            timeout=180,
            what=f"{expected} deliveries delivered",
        )
        proc.popen.send_signal(signal.SIGTERM)
        assert await proc.wait_exit(timeout=30) == 0, proc.output()

    rows = await delivery_rows(infra, schema)
    counts = tally(sink.requests, rows, PATHS)
    alerts = await query(infra, f"SELECT event_id FROM {schema}.alerts")
    uncertain = sum(len(r["uncertain_refs"]) for r in rows)
    print(
        f"\nnotifier burst: {len(published)} events × 2 channels, {len(kills)} kills "
        f"({', '.join(kills)}); {len(sink.requests)} messages received "
        f"({len(sink.received(SLACK_PATH))} Slack, {len(sink.received(WECOM_PATH))} WeCom); "
        f"{uncertain} uncertainties recorded\n{counts.render()}"
    )
    assert {r["event_id"] for r in alerts} == {e.id for e in published}, "one alert per event"
    assert counts.deliveries == expected
    assert counts.problems == [], counts.problems[:5]
    assert counts.lost == 0, counts.render()
    assert counts.unmarked_repeats == 0, counts.render()
    assert uncertain > 0, "the kills left messages whose fate was unknown"
