"""DataArrived → TrainingRequested latency while 1,000 DataArrived per second flow.

A real trainer (``python -m mlcp.trainer``, its own process, no training workers) consumes
DataArrived from real Kafka, appends each batch to its PostgreSQL ledger under the dataset's row
lock, and on every crossing of the threshold (1,000 rows; each batch has 100 rows, so every 10th
record crosses) publishes TrainingRequested through its transactional outbox. The clock runs in
this process from the send of the crossing DataArrived to the receipt of the TrainingRequested
it caused (``causationid``).

The anchor (the floor): the same records, at the same rate, from the same producer (acks=all,
idempotent), to a plain topic with the same partitioning, read back by a plain aiokafka
consumer — measured in the same run, each repetition right before the trainer's.

Workload: a warm-up of 1 s at the rate (not counted), then R repetitions of S seconds each
(full: 5 × 20 s; ``--quick``: 3 × 5 s); per repetition p50 / p95 / p99 of both paths; the
headline is the median over the repetitions. Also printed: where the time goes, per crossing,
from the trainer's own records (same host clock): sent → its ledger transaction began (fetch,
batch linger, decode), → the relay claimed the TrainingRequested (transaction, commit, relay
wake-up), → the record's Kafka timestamp (publish), → received here (ack, consume).

    uv run python bench/trainer_trigger.py [--quick] [--json PATH] [--rate 1000]
                                          [--seconds S] [--repeat R]

On the bus (bench/common.py: the dev stack by default) the trainer runs as ``svc-trainer``,
DataArrived is sent as ``pipeline`` (on both paths) and read back as ``operator``; topics, ACLs
and schema are prefixed with a random token and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Service,
    add_common_args,
    as_owner,
    bench_topic,
    bus,
    cleanup,
    finish,
    measure,
    percentile,
    prepare_bus,
    servers,
)

from mlcp.contracts import CloudEvent, DataArrived, TrainingRequested, encode_event
from mlcp.runtime.kafka import durable_producer, make_consumer
from mlcp.runtime.settings import Settings

CONFIG = """models:
  bench:
    dataset: bench-data
    label: y
    train: mlcp.examples.sklearn:train_logistic
    retrain: {min_new_rows: 1000}
"""
ROWS_PER_BATCH = 100  # threshold 1000 → every 10th DataArrived crosses it
KEY = b"bench-data"  # DataArrived is keyed by its dataset: one partition, in order
WARMUP_S = 1.0
TARGET_MS = 100.0
STAGES = ("fetch + linger", "transaction + relay wake", "relay claim + send", "ack + consume")


async def pace(rate: int, count: int, send: Callable[[int], Awaitable[None]]) -> float:
    """Await ``send(i)`` ``count`` times at ``rate`` per second (in 10 ms ticks); s taken."""
    started = time.perf_counter()
    sent = 0
    while sent < count:
        due = min(count, int((time.perf_counter() - started) * rate) + 1)
        while sent < due:
            await send(sent)
            sent += 1
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


async def tail_consumer(settings: Settings, topic: str) -> AIOKafkaConsumer:
    """A consumer of every partition of ``topic``, positioned at its end (no group)."""
    consumer = make_consumer(settings, enable_auto_commit=False)
    await consumer.start()
    parts = consumer.partitions_for_topic(topic)
    while not parts:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    return consumer


def batches(unique: str, start: int, count: int) -> list[CloudEvent[Any]]:
    return [
        as_owner(
            DataArrived(
                dataset="bench-data",
                batch_id=f"b{i}",
                uri=f"s3://bench/{unique}/b{i}.parquet",  # remote: counted, verified at training
                rows=ROWS_PER_BATCH,
                sha256="a" * 64,
                completeness=1.0,
            ),
            source="bench/pipeline",
        )
        for i in range(start, start + count)
    ]


async def floor(
    producer: AIOKafkaProducer, topic: str, payloads: list[bytes], rate: int
) -> list[float]:
    """Produce → consume latency (ms) of ``payloads`` through a plain topic."""
    consumer = await tail_consumer(bus("operator"), topic)
    sent_at: list[float] = [0.0] * len(payloads)
    latencies: list[float] = []
    acks: list[asyncio.Future[Any]] = []

    async def send(i: int) -> None:
        # Awaiting send() only queues the record (in order); its ack is awaited at the end.
        sent_at[i] = time.perf_counter()
        acks.append(await producer.send(topic, payloads[i], key=KEY, headers=[("i", b"%d" % i)]))

    async def receive() -> None:
        while len(latencies) < len(payloads):
            got = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in got.values():
                for record in records:
                    latencies.append((now - sent_at[int(record.headers[0][1])]) * 1000)

    receiver = asyncio.create_task(receive())
    try:
        await pace(rate, len(payloads), send)
        await asyncio.wait_for(receiver, 60)
        await asyncio.gather(*acks)
    finally:
        receiver.cancel()
        await consumer.stop()
    return latencies


@dataclass
class Received:
    """TrainingRequested as they come back: causationid → (received perf_counter, its id, its
    Kafka timestamp in epoch ms)."""

    by_cause: dict[str, tuple[float, str, int]] = field(default_factory=dict)
    duplicates: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


async def collect(consumer: AIOKafkaConsumer, out: Received) -> None:
    while True:
        got = await consumer.getmany(timeout_ms=100)
        now = time.perf_counter()
        for records in got.values():
            for record in records:
                event = json.loads(record.value)
                cause = event["causationid"]
                if cause in out.by_cause:
                    out.duplicates += 1  # never expected: one request per crossing
                out.by_cause[cause] = (now, event["id"], record.timestamp)
        if got:
            out.changed.set()


@dataclass
class Trial:
    latencies: list[float]
    applied_rate: float
    stages: dict[str, list[float]]


async def trainer(
    producer: AIOKafkaProducer,
    topic: str,
    events: list[CloudEvent[Any]],
    rate: int,
    received: Received,
    schema: str,
) -> Trial:
    """Crossing DataArrived sent → its TrainingRequested received, and where the time went."""
    sent_at: dict[str, tuple[float, float]] = {}  # id → (perf_counter, epoch s)
    payloads = [encode_event(e) for e in events]
    expected = sum(e.data.rows for e in events) // 1000  # the ledger is at a crossing before
    acks: list[asyncio.Future[Any]] = []

    async def send(i: int) -> None:
        sent_at[events[i].id] = (time.perf_counter(), time.time())
        acks.append(await producer.send(topic, payloads[i], key=KEY))

    started = time.perf_counter()
    await pace(rate, len(events), send)
    deadline = time.monotonic() + 120
    while len(crossings := [e.id for e in events if e.id in received.by_cause]) < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(crossings)}/{expected} TrainingRequested within 120 s")
        received.changed.clear()
        try:
            await asyncio.wait_for(received.changed.wait(), 1)
        except TimeoutError:
            continue
    last = max(received.by_cause[c][0] for c in crossings)
    await asyncio.gather(*acks)
    latencies = [(received.by_cause[c][0] - sent_at[c][0]) * 1000 for c in crossings]
    return Trial(
        latencies,
        len(events) / (last - started),
        await stages(schema, crossings, sent_at, received),
    )


async def stages(
    schema: str,
    crossings: list[str],
    sent_at: dict[str, tuple[float, float]],
    received: Received,
) -> dict[str, list[float]]:
    """Per crossing, ms spent in each stage, from the trainer's ledger and outbox timestamps."""
    requests = [received.by_cause[c][1] for c in crossings]
    conn = await asyncpg.connect(servers().database_url)
    try:
        began: dict[str, float] = {
            r[0]: r[1]
            for r in await conn.fetch(
                f"""SELECT event_id, extract(epoch FROM arrived_at)::float8 FROM {schema}.ledger
                    WHERE event_id = ANY($1::text[])""",
                crossings,
            )
        }
        claimed: dict[str, float] = {
            r[0]: r[1]
            for r in await conn.fetch(
                f"""SELECT event_id, extract(epoch FROM published_at)::float8
                    FROM {schema}.mlcp_outbox WHERE event_id = ANY($1::text[])""",
                requests,
            )
        }
    finally:
        await conn.close()
    out: dict[str, list[float]] = {name: [] for name in STAGES}
    for cause, request in zip(crossings, requests, strict=True):
        got_perf, _, kafka_ms = received.by_cause[cause]
        sent_perf, sent_epoch = sent_at[cause]
        got_epoch = sent_epoch + (got_perf - sent_perf)
        marks = [sent_epoch, began[cause], claimed[request], kafka_ms / 1000, got_epoch]
        for name, a, b in zip(STAGES, marks, marks[1:], strict=False):
            out[name].append((b - a) * 1000)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(values: list[float]) -> dict[str, float]:
    return {q: percentile(values, n) for q, n in (("p50", 50), ("p95", 95), ("p99", 99))}


def med(trials: list[dict[str, float]], key: str) -> float:
    return statistics.median(t[key] for t in trials)


async def main(args: argparse.Namespace) -> None:
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    repeat = args.repeat or (3 if args.quick else 5)
    count = int(args.rate * seconds) // 10 * 10  # whole crossings per repetition
    warmup = int(args.rate * WARMUP_S) // 10 * 10
    unique = uuid.uuid4().hex[:8]
    prefix, schema = f"b{unique}.", f"trainer_b{unique}"
    tmp = Path(tempfile.mkdtemp(prefix="mlcp-bench-trigger-"))
    (tmp / "mlcp.yaml").write_text(CONFIG)
    service = Service(
        "trainer",
        {
            "MLCP_TOPIC_PREFIX": prefix,
            "MLCP_DB_SCHEMA": schema,
            "MLCP_CONFIG": str(tmp / "mlcp.yaml"),
            "MLCP_ARTIFACT_ROOT": str(tmp / "artifacts"),
            "MLCP_TRAINER_WORKERS": "0",
        },
        tmp / "trainer.log",
    )
    raw_topic = f"{prefix}bench.raw"
    data_topic = f"{prefix}{DataArrived.TYPE}"
    # DataArrived as a pipeline writes it, on both paths; this process reads as the operator.
    producer = durable_producer(bus("pipeline"), client_id="bench-pipeline")
    floors: list[dict[str, float]] = []
    trials: list[dict[str, float]] = []
    stage_medians: dict[str, list[float]] = {name: [] for name in STAGES}
    received = Received()
    consumer: AIOKafkaConsumer | None = None
    collector: asyncio.Task[None] | None = None
    try:
        await prepare_bus(prefix)
        await bench_topic(raw_topic, 3, writers=["pipeline"], readers=["operator"])
        service.start()
        await service.ready()
        await producer.start()
        consumer = await tail_consumer(bus("operator"), f"{prefix}{TrainingRequested.TYPE}")
        collector = asyncio.create_task(collect(consumer, received))
        offset = 0
        for rep in range(repeat + 1):  # the first is the warm-up
            n = warmup if rep == 0 else count
            events = batches(unique, offset, n)
            offset += n
            lat = await floor(producer, raw_topic, [encode_event(e) for e in events], args.rate)
            assert service.popen is not None
            cpu = cpu_seconds(service.popen.pid)
            trial = await trainer(producer, data_topic, events, args.rate, received, schema)
            cpu = cpu_seconds(service.popen.pid) - cpu
            if rep == 0:
                continue
            floors.append(summary(lat))
            trials.append(
                {**summary(trial.latencies), "applied": trial.applied_rate, "cpu": cpu / n * 1e6}
            )
            for name, values in trial.stages.items():
                stage_medians[name].append(statistics.median(values))
            f, t = floors[-1], trials[-1]
            print(
                f"repetition {rep}/{repeat}: floor p50 {f['p50']:.1f} p95 {f['p95']:.1f} ms; "
                f"trainer p50 {t['p50']:.1f} p95 {t['p95']:.1f} p99 {t['p99']:.1f} ms, "
                f"applied {t['applied']:.0f}/s, trainer CPU {t['cpu']:.0f} µs/event",
                flush=True,
            )
        if received.duplicates:
            raise SystemExit(f"{received.duplicates} duplicate TrainingRequested: not exact")
    finally:
        if collector is not None:
            collector.cancel()
        if consumer is not None:
            await consumer.stop()
        await producer.stop()
        service.stop()
        await cleanup(prefix, schema)

    p95 = med(trials, "p95")
    print(
        f"\nDataArrived → TrainingRequested: {repeat} × {count} DataArrived at {args.rate}/s "
        f"({ROWS_PER_BATCH} rows each, threshold 1000 → {count // 10} crossings each); "
        f"medians over the repetitions"
    )
    print(f"{'path':<44}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for name, rows in (
        ("raw aiokafka produce → consume (anchor)", floors),
        ("trainer: DataArrived → TrainingRequested", trials),
    ):
        print(f"{name:<44}{med(rows, 'p50'):>9.1f}{med(rows, 'p95'):>9.1f}{med(rows, 'p99'):>9.1f}")
    print(
        "where a crossing's time goes (median ms): "
        + ", ".join(f"{name} {statistics.median(v):.1f}" for name, v in stage_medians.items())
    )
    extra = {
        "p50_ms": med(trials, "p50"),
        "p95_ms": p95,
        "p99_ms": med(trials, "p99"),
        "anchor_p50_ms": med(floors, "p50"),
        "anchor_p99_ms": med(floors, "p99"),
        "applied_per_s": med(trials, "applied"),
        "trainer_cpu_us_per_event": med(trials, "cpu"),
        **{
            f"stage_{name.replace(' + ', '_').replace(' ', '_')}_ms": statistics.median(v)
            for name, v in stage_medians.items()
        },
    }
    finish(
        [
            measure(
                "trigger_latency",
                "DataArrived → TrainingRequested p95",
                p95,
                "ms",
                "lower",
                f"{count:,} DataArrived at {args.rate:,}/s × {repeat} repetitions after a "
                f"{WARMUP_S:.0f} s warm-up; 100 rows each, threshold 1,000 (every 10th "
                f"crosses); trainer in its own process; median of per-repetition p95",
                anchor=med(floors, "p95"),
                anchor_name="raw aiokafka produce → consume, same records and rate",
                target="p95 ≤ 100 ms at 1,000/s",
                met=p95 <= TARGET_MS,
                extra=extra,
                note=f"p50 {extra['p50_ms']:.1f} ms, p99 {extra['p99_ms']:.1f} ms",
            )
        ],
        args.json,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--rate", type=int, default=1000, help="DataArrived per second")
    parser.add_argument("--seconds", type=float, default=None, help="per repetition")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions")
    asyncio.run(main(parser.parse_args()))
