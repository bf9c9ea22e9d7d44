"""Small Kafka helpers for integration tests: produce raw records, read topics, inspect offsets.

Each takes the ``Settings`` of the principal it acts as (``infra.admin`` for harness chores,
``infra.settings("pipeline")`` to produce as a pipeline …): every client is authenticated.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic

from mlcp.runtime.kafka import make_admin, make_consumer
from mlcp.runtime.settings import Settings


async def create_topics(bus: Settings, names: list[str], partitions: int = 1) -> None:
    admin = make_admin(bus)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic`` from fresh cluster metadata (a new consumer knows none)."""
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]


async def produce(
    bus: Settings, topic: str, records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
) -> None:
    """Send (key, value, headers) records in order and wait for acks=all."""
    from mlcp.runtime.kafka import durable_producer

    producer = durable_producer(bus, client_id="mlcp-tests")
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


async def read_all(bus: Settings, topic: str, *, timeout: float = 10.0) -> list[Any]:
    """Every record currently in ``topic`` (all partitions), without joining a group."""
    consumer = make_consumer(bus, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic)
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if loop.time() > deadline:
                raise AssertionError(f"could not read {topic} to its end in {timeout}s")
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


async def lag(bus: Settings, group: str, topic: str) -> int | None:
    """Records in ``topic`` not yet committed by ``group`` (None: the group committed nothing)."""
    admin = make_admin(bus)
    consumer = make_consumer(bus, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        tps = await partitions_of(consumer, topic)
        assert tps, f"topic {topic} has no partitions"
        ends = await consumer.end_offsets(tps) if tps else {}
        mine = {tp: meta.offset for tp, meta in committed.items() if tp.topic == topic}
        if not mine:
            return None
        return sum(ends[tp] - max(mine.get(tp, 0), 0) for tp in tps)
    finally:
        await consumer.stop()
        await admin.close()


def as_principal(settings: Settings, principal: str) -> Settings:
    """The same settings as another principal (its password file beside this one's): a test
    that runs a service as ``svc-x`` injects what other producers write as them (or as the
    admin for harness chores)."""
    if settings.kafka_password_file is None:
        return settings
    return settings.model_copy(
        update={
            "kafka_username": principal,
            "kafka_password_file": settings.kafka_password_file.with_name(principal),
        }
    )


def owner_source(event_type: str) -> str:
    """The CloudEvents source consumers accept for ``event_type`` (its owner in acls.yaml)."""
    from mlcp.runtime.acl import load_policy

    allowed = load_policy().allowed_sources(event_type)
    return sorted(allowed)[0] if allowed else "tests"
