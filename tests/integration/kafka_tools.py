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
    return (await lags(bus, group, [topic]))[topic]


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
    from mlcp.policy.acl import load_policy

    allowed = load_policy().allowed_sources(event_type)
    return sorted(allowed)[0] if allowed else "tests"


async def produce_to(
    bus: Settings,
    topic: str,
    records: list[tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]],
    **options: Any,
) -> None:
    """Send (partition, key, value, headers) records in order, with producer ``options``
    (``compression_type="gzip"``, a larger ``max_request_size`` …), and wait for acks=all."""
    from mlcp.runtime.kafka import durable_producer

    producer = durable_producer(bus, client_id="mlcp-tests", **options)
    await producer.start()
    try:
        for partition, key, value, headers in records:
            await producer.send_and_wait(
                topic, value=value, key=key, headers=headers, partition=partition
            )
    finally:
        await producer.stop()


async def lags(bus: Settings, group: str, topics: list[str]) -> dict[str, int | None]:
    """``lag`` of many topics in one look (None: the group committed nothing on that topic)."""
    admin = make_admin(bus)
    consumer = make_consumer(bus, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        cluster = await consumer._client.fetch_all_metadata()
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(cluster.partitions_for_topic(t) or ())
        ]
        assert {tp.topic for tp in tps} == set(topics), f"a topic of {topics} has no partitions"
        ends = await consumer.end_offsets(tps)
        out: dict[str, int | None] = {}
        for topic in topics:
            mine = [tp for tp in tps if tp.topic == topic]
            if not any(tp in committed for tp in mine):
                out[topic] = None
                continue
            out[topic] = sum(
                ends[tp] - max(committed[tp].offset if tp in committed else 0, 0) for tp in mine
            )
        return out
    finally:
        await consumer.stop()
        await admin.close()


async def delete_before(bus: Settings, topic: str, partition: int, offset: int) -> None:
    """Delete the records of ``topic`` ``partition`` before ``offset`` (what retention does)."""
    from aiokafka.admin import RecordsToDelete

    admin = make_admin(bus)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, partition): RecordsToDelete(offset)})
    finally:
        await admin.close()


async def set_topic_config(bus: Settings, topic: str, configs: dict[str, str]) -> None:
    """Change topic-level configs (``max.message.bytes`` …) of an existing topic."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = make_admin(bus)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
    finally:
        await admin.close()
