"""Notifier fan-out: throughput to a local sink with rate limits off, and the delay from an event
on the bus to its delivery (p50 / p95), against the real Kafka and PostgreSQL of the dev stack.

    uv run python bench/notifier_fanout.py [--quick] [--json PATH]

Three channels (Slack, WeCom, signed webhook) all point at the recording sink
(``mlcp.examples.webhook_sink``) on 127.0.0.1, so the figures measure the notifier, not the network.

* throughput: a burst of N GateFailed events routed to all three channels, rate limits off
  (``rate_per_minute`` 10⁹) — deliveries per second until the sink has every message;
* latency: events published one at a time (every 50 ms), rate limits off — time from the
  event's ``time`` to the sink receiving each channel's message;
* comparison: the same burst with the default limits (Slack 60/min, WeCom 20/min) — how many
  messages the channels actually receive and how long until every alert is represented.

Sizes: full a burst of 1,000 events and 200 paced ones; ``--quick`` 200 and 40; the limited
burst is 100 events in both. Each measurement runs once, on a fresh notifier.
The headline row is the fan-out throughput, with the p95 bus → delivery delay beside it.

On the bus (bench/common.py: the dev stack by default) the notifier runs in this process as
``svc-notifier``; the GateFailed events are sent as the gatekeeper would (``svc-gatekeeper``,
source ``mlcp/gatekeeper``), through one producer per notifier, each acknowledged before the
next.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mlcp.contracts import CloudEvent, GateFailed
from mlcp.contracts.common import Evidence
from mlcp.examples.webhook_sink import Sink, serve
from mlcp.notifier.app import build

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Publisher,
    as_owner,
    bus,
    cleanup,
    cli,
    finish,
    measure,
    percentile,
    prepare_bus,
    servers,
)

PATHS = {"slack": "/slack/bench", "wecom": "/wecom/send", "webhook": "/hook"}
MARK = re.compile(r"bench-[0-9a-f]{12}")


def config(rate: float | None, *, routed: bool = True) -> str:
    routed_event = "gate.failed" if routed else "model.promoted"  # the bench sends GateFailed
    limit = f", rate_per_minute: {rate:g}" if rate else ""
    return f"""
notifications:
  channels:
    slack: {{kind: slack, url_env: B_SLACK{limit}}}
    wecom: {{kind: wecom, url_env: B_WECOM{limit}}}
    hook: {{kind: webhook, url_env: B_HOOK, secret_env: B_KEY{limit}}}
  routes:
    - {{events: [{routed_event}], channels: [slack, wecom, hook]}}
"""


def event(i: int) -> Any:
    # The correlation id marks the event in every rendered message (all three kinds show it).
    # GateFailed is the gatekeeper's: its source, sent as its principal (Publisher).
    mark = f"bench-{uuid.uuid4().hex[:12]}"
    return as_owner(
        GateFailed(
            model=f"m{i % 7}",
            version=f"1.{i}.0",
            stage="quality",
            kind="metrics",
            reason="accuracy 0.90 < 0.92",
            evidence=(Evidence.evaluate("accuracy", 0.9, ">=", 0.92),),
        ),
        correlationid=mark,
    )


def marks(sink: Sink, path: str) -> list[tuple[str, float]]:
    out = []
    for request in sink.received(path):
        text = str(request.get("json", request.get("text")))
        out.extend((m, request["time"]) for m in set(MARK.findall(text)))
    return out


Publish = Callable[[list[CloudEvent[Any]]], Awaitable[None]]


async def run_notifier(rate: float | None, body: Any, *, routed: bool = True) -> Any:
    """A fresh notifier (its own prefix, schema and sink) as ``svc-notifier``; ``body(sink,
    publish, runtime)`` runs once it is assigned its partitions. ``publish`` sends events in
    order as the gatekeeper, each acknowledged before the next (one producer per notifier)."""
    sink = Sink(secret="bench-key")
    unique = uuid.uuid4().hex[:8]
    prefix = f"b{unique}."
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlcp.yaml"
        path.write_text(config(rate, routed=routed))
        async with serve(sink) as base:
            os.environ.update(
                B_SLACK=base + PATHS["slack"],
                B_WECOM=base + PATHS["wecom"] + "?key=bench",
                B_HOOK=base + PATHS["webhook"],
                B_KEY="bench-key",
            )
            await prepare_bus(prefix)
            runtime = build(
                bus(
                    "svc-notifier",
                    prefix,
                    db_schema=f"notifier_b{unique}",
                    http_port=0,
                    config=path,
                    log_level="WARNING",
                )
            )
            publisher = Publisher(prefix)

            async def publish(events: list[CloudEvent[Any]]) -> None:
                for e in events:
                    await publisher.send(e, key=e.subject.encode() if e.subject else None)

            try:
                await runtime.start()
                while not runtime.assignments.assigned:
                    await asyncio.sleep(0.05)
                await publisher.producer(GateFailed.TYPE)  # connected before any clock starts
                return await body(sink, publish, runtime)
            finally:
                await publisher.close()
                await runtime.stop()
                await cleanup(prefix, f"notifier_b{unique}")


async def until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out: the notifier did not deliver everything")
        await asyncio.sleep(0.02)


async def throughput(n: int) -> dict[str, float]:
    async def body(sink: Sink, publish: Publish, _: Any) -> dict[str, float]:
        events = [event(i) for i in range(n)]
        started = time.perf_counter()
        await publish(events)
        await until(lambda: len(sink.requests) >= 3 * n, timeout=300)
        elapsed = time.perf_counter() - started
        return {"deliveries": 3 * n, "seconds": elapsed, "per_s": 3 * n / elapsed}

    result: dict[str, float] = await run_notifier(1e9, body)
    return result


async def consume_only(n: int) -> float:
    """Events/s through the inbox when no route matches: the consumer's own ceiling."""

    async def body(sink: Sink, publish: Publish, runtime: Any) -> float:
        events = [event(i) for i in range(n)]
        started = time.perf_counter()
        await publish(events)
        while await runtime.pool.fetchval("SELECT count(*) FROM alerts") < n:
            await asyncio.sleep(0.02)
        return n / (time.perf_counter() - started)

    result: float = await run_notifier(1e9, body, routed=False)
    return result


async def latency(n: int) -> dict[str, list[float]]:
    async def body(sink: Sink, publish: Publish, _: Any) -> dict[str, list[float]]:
        sent: dict[str, float] = {}
        for i in range(n):
            e = event(i)
            sent[e.correlationid] = e.time.timestamp()
            await publish([e])
            await asyncio.sleep(0.05)
        await until(lambda: len(sink.requests) >= 3 * n, timeout=120)
        return {
            kind: [t - sent[m] for m, t in marks(sink, path) if m in sent]
            for kind, path in PATHS.items()
        }

    result: dict[str, list[float]] = await run_notifier(1e9, body)
    return result


async def limited_burst(n: int) -> dict[str, tuple[int, float]]:
    async def body(sink: Sink, publish: Publish, runtime: Any) -> dict[str, tuple[int, float]]:
        events = [event(i) for i in range(n)]
        started = time.perf_counter()
        await publish(events)
        done: dict[str, tuple[int, float]] = {}
        while len(done) < 2:
            for kind in ("slack", "wecom"):
                delivered = await runtime.pool.fetchval(
                    "SELECT count(*) FROM deliveries WHERE channel = $1 AND state = 'delivered'",
                    kind,
                )
                if kind not in done and delivered == n:
                    done[kind] = (len(sink.received(PATHS[kind])), time.perf_counter() - started)
            if time.perf_counter() - started > 120:
                raise SystemExit("timed out waiting for the digests")
            await asyncio.sleep(0.05)
        return done

    result: dict[str, tuple[int, float]] = await run_notifier(None, body)
    return result


async def main(quick: bool, json_path: Path | None) -> None:
    n_burst, n_latency = (200, 40) if quick else (1000, 200)
    where = servers().bootstrap
    print(f"notifier fan-out bench ({'quick' if quick else 'full'}): Kafka {where}", flush=True)
    tp = await throughput(n_burst)
    consumed = await consume_only(n_burst)
    lat = await latency(n_latency)
    burst = await limited_burst(100)

    print()
    print("| measurement | value |")
    print("|---|---|")
    print(
        f"| fan-out, rate limits off: {int(tp['deliveries'])} deliveries "
        f"({n_burst} events × 3 channels) | {tp['per_s']:.0f} deliveries/s "
        f"({tp['seconds']:.1f} s) |"
    )
    print(f"| consumer alone (no route matches), {n_burst} events | {consumed:.0f} events/s |")
    for kind, values in lat.items():
        p50, p95 = 1000 * statistics.median(values), 1000 * percentile(values, 95)
        print(
            f"| event on bus → delivered, {kind} (n={len(values)}) "
            f"| p50 {p50:.0f} ms, p95 {p95:.0f} ms |"
        )
    for kind, (messages, seconds) in burst.items():
        print(
            f"| burst of 100 with default limits, {kind} | {messages} messages, every alert "
            f"represented after {seconds:.1f} s |"
        )
    delays = [1000 * v for values in lat.values() for v in values]
    p95 = percentile(delays, 95)
    finish(
        [
            measure(
                "notification_fanout",
                "notification fan-out to a local sink",
                tp["per_s"],
                "deliveries/s",
                "higher",
                f"in-process notifier, burst of {n_burst} GateFailed × 3 channels (Slack, WeCom, "
                f"signed webhook) to a local sink, rate limits off; delay: {n_latency} events "
                "50 ms apart, event time → sink receipt, all channels",
                note=f"bus → delivered p95 {p95:.0f} ms",
                extra={
                    "delivery_p50_ms": statistics.median(delays),
                    "delivery_p95_ms": p95,
                    "consume_only_events_per_s": consumed,
                },
            )
        ],
        json_path,
    )


if __name__ == "__main__":
    cli(__doc__, main)
