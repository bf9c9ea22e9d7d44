"""DataArrived → TrainingRequested latency while ~1,000 DataArrived per second flow.

A real trainer (in this process, no training workers) consumes DataArrived from real Kafka,
appends each batch to its PostgreSQL ledger under the dataset's row lock, and on every crossing
of the threshold (1,000 rows; each batch has 100 rows, so every 10th record crosses) publishes
TrainingRequested through its outbox. The clock runs from the producer's send of the crossing
DataArrived to the consumer's receipt of the TrainingRequested it caused (``causationid``).

The floor: the same records, at the same rate, produced to a plain topic and read back by a plain
aiokafka consumer (acks=all, idempotent producer), measured in the same run. Target (issue 4):
p95 ≤ 100 ms.

    uv run python bench/trainer_trigger.py [--quick] [--rate 1000] [--seconds 20]

Uses MLCP_KAFKA_BOOTSTRAP / MLCP_DATABASE_URL (default: the dev stack); topics and schema are
prefixed with a random token, and the schema and topics are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from mlcp.contracts import DataArrived, TrainingRequested, decode_event, encode_event, new_event
from mlcp.runtime import Settings
from mlcp.trainer.app import build
from mlcp.trainer.worker import WorkerSettings

CONFIG = """models:
  bench:
    dataset: bench-data
    label: y
    train: mlcp.examples.sklearn:train_logistic
    retrain: {min_new_rows: 1000}
"""
ROWS_PER_BATCH = 100


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def pace(rate: int, count: int, send: Callable[[int], None]) -> float:
    """Call ``send(i)`` ``count`` times at ``rate`` per second (in 10 ms ticks); returns s taken."""
    started = time.perf_counter()
    sent = 0
    while sent < count:
        due = min(count, int((time.perf_counter() - started) * rate) + 1)
        while sent < due:
            send(sent)
            sent += 1
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


async def tail_consumer(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
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


async def raw_floor(bootstrap: str, topic: str, payloads: list[bytes], rate: int) -> list[float]:
    """Produce→consume latency of the same records through a plain topic."""
    consumer = await tail_consumer(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    pending: list[asyncio.Future[Any]] = []

    def send(i: int) -> None:
        sent_at[i] = time.perf_counter()
        pending.append(
            asyncio.ensure_future(producer.send(topic, payloads[i], key=str(i).encode()))
        )

    async def receive() -> None:
        while len(latencies) < len(payloads):
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    latencies.append((now - sent_at[int(record.key)]) * 1000)

    receiver = asyncio.create_task(receive())
    await pace(rate, len(payloads), send)
    await asyncio.wait_for(receiver, 60)
    await asyncio.gather(*pending)
    await producer.stop()
    await consumer.stop()
    return latencies


async def trainer_latency(
    settings: Settings, events: list[Any], rate: int
) -> tuple[list[float], float]:
    """Crossing DataArrived sent → its TrainingRequested received; and the applied rate."""
    runtime = build(settings, WorkerSettings(workers=0))
    await runtime.start()
    requested_topic = settings.topic(TrainingRequested.TYPE)
    consumer = await tail_consumer(settings.kafka_bootstrap, requested_topic)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    pending: list[asyncio.Future[Any]] = []
    expected = sum(e.data.rows for e in events) // 1000
    topic = settings.topic(DataArrived.TYPE)
    payloads = [encode_event(e) for e in events]
    started = time.perf_counter()

    def send(i: int) -> None:
        sent_at[events[i].id] = time.perf_counter()
        pending.append(asyncio.ensure_future(producer.send(topic, payloads[i], key=b"bench-data")))

    async def receive() -> None:
        while len(latencies) < expected:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    event = decode_event(record.value)
                    latencies.append((now - sent_at[str(event.causationid)]) * 1000)

    receiver = asyncio.create_task(receive())
    await pace(rate, len(events), send)
    await asyncio.wait_for(receiver, 300)
    await asyncio.gather(*pending)
    applied_rate = len(events) / (time.perf_counter() - started)
    await producer.stop()
    await consumer.stop()
    await runtime.stop()
    return latencies, applied_rate


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 seconds of load")
    parser.add_argument("--rate", type=int, default=1000, help="DataArrived per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    count = int(args.rate * seconds)
    logging.basicConfig(level=logging.WARNING)
    unique = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="mlcp-bench-"))
    (tmp / "mlcp.yaml").write_text(CONFIG)
    settings = Settings(
        kafka_bootstrap=os.environ.get("MLCP_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        database_url=os.environ.get(
            "MLCP_DATABASE_URL", "postgresql://mlcp:mlcp@127.0.0.1:55432/mlcp"
        ),
        topic_prefix=f"b{unique}.",
        db_schema=f"trainer_b{unique}",
        http_port=0,
        config=tmp / "mlcp.yaml",
        artifact_root=tmp / "artifacts",
        consumer_session_timeout_ms=6000,
    )
    events = [
        new_event(
            DataArrived(
                dataset="bench-data",
                batch_id=f"b{i}",
                uri=f"s3://bench/{unique}/b{i}.parquet",  # remote: counted, verified at training
                rows=ROWS_PER_BATCH,
                sha256="a" * 64,
                completeness=1.0,
            ),
            source="bench",
        )
        for i in range(count)
    ]
    raw_topic = f"b{unique}.bench.raw"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(raw_topic, 3, 1)])
    try:
        floor = await raw_floor(
            settings.kafka_bootstrap, raw_topic, [encode_event(e) for e in events], args.rate
        )
        latencies, applied = await trainer_latency(settings, events, args.rate)
    finally:
        conn = await asyncpg.connect(settings.database_url)
        await conn.execute(f"DROP SCHEMA IF EXISTS {settings.db_schema} CASCADE")
        await conn.close()
        topics = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        await admin.delete_topics(topics)
        await admin.close()

    print(
        f"\nDataArrived → TrainingRequested, {count} DataArrived offered at {args.rate}/s "
        f"({ROWS_PER_BATCH} rows each, threshold 1000 → {len(latencies)} crossings); "
        f"trainer applied {applied:.0f}/s"
    )
    print(f"{'path':<44}{'n':>7}{'median ms':>12}{'p95 ms':>10}{'max ms':>10}")
    for name, values in (
        ("raw aiokafka produce → consume (floor)", floor),
        ("trainer: DataArrived → TrainingRequested", latencies),
    ):
        print(
            f"{name:<44}{len(values):>7}{statistics.median(values):>12.1f}"
            f"{pct(values, 95):>10.1f}{max(values):>10.1f}"
        )
    print("target (issue 4): p95 ≤ 100 ms")


if __name__ == "__main__":
    asyncio.run(main())
