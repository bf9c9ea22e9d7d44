"""Raw bus floor: aiokafka produce → consume of the same records, no mlcp code in the path.

What every mlcp figure sits on: the same producer settings the services use (acks=all,
idempotent) and a plain consumer, against the same Kafka, in the same run.

* throughput: N records of one encoded ``PredictionLogged`` event (~0.9 KB, 20 features) sent
  without waiting for each ack (the producer batches), read back by a consumer already at the
  topic's end; events/s = N / (first send → last record received);
* round trip: M records one at a time, ``send_and_wait`` → the consumer's ``getone``; p50 / p95.

Sizes: full 100,000 records and 500 round trips; ``--quick`` 10,000 and 50. Repetitions: the
throughput run is repeated 3 times (median reported), after a warm-up of 20 round trips.

    uv run python bench/bus_floor.py [--quick] [--json PATH]

Uses MLCP_KAFKA_BOOTSTRAP (default: the dev stack); the topic has a random name.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KAFKA, cli, drop_topics, finish, measure, percentile

from mlcp.contracts import PredictionLogged, encode_event, new_event


def record() -> bytes:
    data = PredictionLogged.model_validate(
        {
            "model": "bench",
            "version": "1.0.0",
            "alias": "production",
            "request_id": uuid.uuid4().hex,
            "features": {f"f{i:02d}": 0.123456789 * i for i in range(20)},
            "prediction": 1,
            "probability": 0.5,
            "latency_ms": 3.2,
            "ts": "2026-01-01T00:00:00Z",
        }
    )
    return encode_event(new_event(data, source="bench/bus-floor"))


async def started_consumer(topic: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=KAFKA, auto_offset_reset="latest")
    await consumer.start()
    # Resolve the position now, so that records sent from here on are all read.
    await consumer.seek_to_end()
    for tp in consumer.assignment():
        await consumer.position(tp)
    return consumer


async def throughput(producer: AIOKafkaProducer, topic: str, value: bytes, n: int) -> float:
    consumer = await started_consumer(topic)
    try:
        started = time.perf_counter()
        sends = [await producer.send(topic, value, key=b"%d" % (i % 16)) for i in range(n)]
        received = 0
        while received < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not batch and time.perf_counter() - started > 120:
                raise SystemExit(f"bus floor: only {received}/{n} records came back in 120 s")
            received += sum(len(records) for records in batch.values())
        elapsed = time.perf_counter() - started
        await asyncio.gather(*sends)  # every ack is in (they are, once consumed)
        return n / elapsed
    finally:
        await consumer.stop()


async def round_trips(producer: AIOKafkaProducer, topic: str, value: bytes, n: int) -> list[float]:
    consumer = await started_consumer(topic)
    try:
        out = []
        for _ in range(n):
            started = time.perf_counter()
            await producer.send_and_wait(topic, value, key=b"rt")
            await asyncio.wait_for(consumer.getone(), timeout=30)
            out.append((time.perf_counter() - started) * 1000)
        return out
    finally:
        await consumer.stop()


async def main(quick: bool, json_path: Path | None) -> None:
    n, m, repeats = (10_000, 50, 3) if quick else (100_000, 500, 3)
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    topic = prefix + "bus-floor"
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    value = record()
    producer = AIOKafkaProducer(
        bootstrap_servers=KAFKA, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        await round_trips(producer, topic, value, 20)  # warm-up: connections, metadata
        rates = []
        for i in range(repeats):
            rates.append(await throughput(producer, topic, value, n))
            print(f"throughput run {i + 1}/{repeats}: {rates[-1]:,.0f} events/s", flush=True)
        latencies = await round_trips(producer, topic, value, m)
    finally:
        await producer.stop()
        await drop_topics(prefix)

    rate = statistics.median(rates)
    p50, p95 = statistics.median(latencies), percentile(latencies, 95)
    print(f"raw bus floor, {len(value)} B records on 1 partition, Kafka {KAFKA}")
    print(f"  produce → consume: {rate:,.0f} events/s (median of {repeats} × {n:,})")
    print(f"  round trip (n={m}): p50 {p50:.2f} ms, p95 {p95:.2f} ms, max {max(latencies):.2f} ms")
    finish(
        [
            measure(
                "bus_floor",
                "raw bus floor: aiokafka produce → consume of the same records",
                rate,
                "events/s",
                "higher",
                f"{n:,} records of {len(value)} B (one PredictionLogged, 20 features), acks=all, "
                f"1 partition, median of {repeats} runs; round trip: {m} records one at a time",
                note=f"round trip p95 {p95:.1f} ms",
                extra={"round_trip_p50_ms": p50, "round_trip_p95_ms": p95},
            )
        ],
        json_path,
    )


if __name__ == "__main__":
    cli(__doc__, main)
