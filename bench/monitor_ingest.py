"""Ingest of PredictionLogged (20 numeric features) through real Kafka into the monitor's windows.

Compares, on the same records in the same run:
* raw aiokafka consumption (fetch only: no decoding, no database) — the ceiling;
* the monitor: decode + contract validation + inbox + drift windows (chunks in PostgreSQL,
  a drift test every ``window_size`` rows) + Prometheus metrics, one transaction per batch.

Targets (issue 6): ≥ 20,000 events/s and ≥ 0.5 × raw aiokafka.

    uv run python bench/monitor_ingest.py [--quick]

Needs the dev stack (MLCP_KAFKA_BOOTSTRAP / MLCP_DATABASE_URL, defaults: the dev stack's).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from mlcp.contracts import (
    ArtifactRef,
    DatasetRef,
    FeatureSpec,
    ModelVersionRegistered,
    PredictionLogged,
    encode_event,
    new_event,
)
from mlcp.monitor import app as monitor_app
from mlcp.monitor.app import DEFAULT_PORT, SERVICE, wire
from mlcp.monitor.handlers import Monitor
from mlcp.monitor.metrics import MonitorMetrics
from mlcp.monitor.reference import profile_from_columns
from mlcp.runtime import ServiceRuntime, Settings, service_migrations_dir
from mlcp.runtime.platform import PlatformConfig

FEATURES = [f"f{i:02d}" for i in range(20)]
KAFKA = os.environ.get("MLCP_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
DATABASE = os.environ.get("MLCP_DATABASE_URL", "postgresql://mlcp:mlcp@127.0.0.1:55432/mlcp")
PARTITIONS = 3


def records(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 1, (count, len(FEATURES)))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        encode_event(
            new_event(
                PredictionLogged(
                    model="bench",
                    version="1.0.0",
                    request_id=f"r{seed}-{i}",
                    features=dict(zip(FEATURES, row.tolist(), strict=True)),
                    prediction=1,
                    latency_ms=12.5,
                    ts=t0 + timedelta(milliseconds=i),
                ),
                source="bench/inference",
            )
        )
        for i, row in enumerate(values)
    ]


def registration() -> bytes:
    rng = np.random.default_rng(0)
    profile = profile_from_columns({f: rng.normal(0, 1, 5000) for f in FEATURES})
    data = ModelVersionRegistered(
        model="bench",
        version="1.0.0",
        run_id="run-1",
        metrics={"accuracy": 0.9},
        params={},
        artifact=ArtifactRef(uri="file:///bench", sha256="a" * 64, format="skops"),
        reference_profile=profile,
        feature_schema=tuple(FeatureSpec(name=f, dtype="float64") for f in FEATURES),
        datasets=(DatasetRef(dataset="bench", batch_ids=("b",), sha256="b" * 64),),
    )
    return encode_event(new_event(data, source="bench/registry"))


async def produce(topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=KAFKA,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=1 << 20,
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=b"bench") for v in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def create(topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    finally:
        await admin.close()


async def raw_consume(topic: str, count: int) -> float:
    """Seconds from the first to the last of ``count`` records, plain aiokafka, no decoding."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=KAFKA,
        group_id=f"raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=1000,
    )
    await consumer.start()
    try:
        seen, first = 0, None
        while seen < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            n = sum(len(v) for v in batch.values())
            if n and first is None:
                first = time.perf_counter()
            seen += n
        await consumer.commit()
        assert first is not None
        return time.perf_counter() - first
    finally:
        await consumer.stop()


class Timed:
    """Wraps the batch handler to time each batch."""

    def __init__(self, monitor: Monitor) -> None:
        self.inner = monitor.on_predictions
        self.durations: list[float] = []
        self.sizes: list[int] = []
        self.first: float | None = None
        self.last: float = 0.0
        self.runtime_s = 0.0  # the runtime's decode + inbox + handler + commit time
        self.starts: list[float] = []

    async def __call__(self, events: list[Any], tx: Any) -> None:
        start = time.perf_counter()
        if self.first is None:
            self.first = start
        await self.inner(events, tx)
        self.last = time.perf_counter()
        self.durations.append(self.last - start)
        self.sizes.append(len(events))
        self.starts.append(start)


def monitor_runtime(prefix: str, schema: str) -> tuple[ServiceRuntime, Timed]:
    settings = Settings(
        kafka_bootstrap=KAFKA,
        database_url=DATABASE,
        topic_prefix=prefix,
        db_schema=schema,
        http_port=0,
        log_level="WARNING",
    )
    runtime = ServiceRuntime(
        SERVICE,
        default_port=DEFAULT_PORT,
        migrations_dir=service_migrations_dir(monitor_app.__file__),
        settings=settings,
    )
    monitor = Monitor(PlatformConfig(), MonitorMetrics(runtime.metrics.registry))
    timed = Timed(monitor)
    monitor.on_predictions = timed  # type: ignore[method-assign]
    wire(runtime, monitor)
    return runtime, timed


async def wait_until(conn: asyncpg.Connection, sql: str, target: int) -> None:
    while (await conn.fetchval(sql) or 0) < target:
        await asyncio.sleep(0.02)


async def register(prefix: str, schema: str) -> None:
    """Project the version first: predictions of an unknown version are only counted."""
    await produce(f"{prefix}{ModelVersionRegistered.TYPE}", [registration()])
    runtime, _ = monitor_runtime(prefix, schema)
    await runtime.start()
    try:
        conn = await asyncpg.connect(DATABASE)
        try:
            await wait_until(conn, f"SELECT count(*) FROM {schema}.versions", 1)
        finally:
            await conn.close()
    finally:
        await runtime.stop()


async def monitor_consume(prefix: str, schema: str, count: int) -> tuple[float, Timed]:
    """Seconds from the first batch handled to the last record's transaction committed."""
    runtime, timed = monitor_runtime(prefix, schema)
    await runtime.start()
    try:
        conn = await asyncpg.connect(DATABASE)
        try:
            await wait_until(conn, f"SELECT sum(served) FROM {schema}.traffic", count)
        finally:
            await conn.close()
        assert timed.first is not None
        topic = runtime.settings.topic(PredictionLogged.TYPE)
        timed.runtime_s = runtime.metrics.handler_seconds.labels(topic)._sum.get()
        return timed.last - timed.first, timed
    finally:
        await runtime.stop()


async def run_once(count: int, seed: int) -> dict[str, float]:
    unique = uuid.uuid4().hex[:8]
    prefix, schema = f"bench{unique}.", f"monitor_bench_{unique}"
    topic = f"{prefix}{PredictionLogged.TYPE}"
    await create([topic, f"{prefix}{ModelVersionRegistered.TYPE}"])
    await register(prefix, schema)
    await produce(topic, records(count, seed))
    raw_s = await raw_consume(topic, count)
    mon_s, timed = await monitor_consume(prefix, schema, count)
    conn = await asyncpg.connect(DATABASE)
    try:
        decisions = await conn.fetchval(f"SELECT count(*) FROM {schema}.decisions")
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()
    # Time between the end of one handler call and the start of the next: the runtime's
    # decoding, inbox, commit and FastStream's fetch (everything that is not the handler).
    between = [
        nxt - (start + took)
        for start, nxt, took in zip(timed.starts, timed.starts[1:], timed.durations, strict=False)
    ]
    per_event_ms = [d / s * 1000 for d, s in zip(timed.durations, timed.sizes, strict=True)]
    return {
        "raw": count / raw_s,
        "monitor": count / mon_s,
        "batch_p50_ms": statistics.median(timed.durations) * 1000,
        "batch_p95_ms": float(np.percentile(timed.durations, 95) * 1000),
        "mean_batch": statistics.mean(timed.sizes),
        "handler_us_per_event": statistics.median(per_event_ms) * 1000,
        "drift_windows": float(decisions),
        "runtime_us_per_event": timed.runtime_s / count * 1e6,
        "outside_handler_share": sum(between) / mon_s,
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("faststream").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run of 20,000 records")
    args = parser.parse_args()
    count, runs = (20_000, 1) if args.quick else (100_000, 3)
    results = [asyncio.run(run_once(count, seed)) for seed in range(runs)]

    def col(key: str) -> tuple[float, float]:
        values = [r[key] for r in results]
        return statistics.median(values), float(np.percentile(values, 95))

    raw, mon = col("raw"), col("monitor")
    print(
        f"\nmonitor ingest — {count:,} PredictionLogged × 20 features, {runs} run(s), "
        f"{PARTITIONS} partitions\n"
    )
    print(f"{'measure':<44}{'median':>14}{'p95':>14}")
    print("-" * 72)
    print(f"{'raw aiokafka consume (events/s)':<44}{raw[0]:>14,.0f}{raw[1]:>14,.0f}")
    print(f"{'mlcp monitor ingest (events/s)':<44}{mon[0]:>14,.0f}{mon[1]:>14,.0f}")
    for key, label in (
        ("batch_p50_ms", "handler time per batch, p50 (ms)"),
        ("batch_p95_ms", "handler time per batch, p95 (ms)"),
        ("mean_batch", "events per batch (mean)"),
        ("handler_us_per_event", "handler time per event (µs)"),
        ("runtime_us_per_event", "decode+inbox+handler+commit per event (µs)"),
        ("outside_handler_share", "wall time outside the handler (share)"),
        ("drift_windows", "drift windows decided"),
    ):
        m, p = col(key)
        print(f"{label:<44}{m:>14,.1f}{p:>14,.1f}")
    ratio = mon[0] / raw[0]
    print("-" * 72)
    print(f"monitor / raw = {ratio:.2f}  (target ≥ 0.5: {'met' if ratio >= 0.5 else 'NOT met'})")
    print(f"monitor ≥ 20,000 events/s: {'met' if mon[0] >= 20_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
