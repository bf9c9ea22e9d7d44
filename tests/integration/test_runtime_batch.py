"""Batch consumption keeps the per-record guarantees: each valid event applied once (also the
same event twice in a batch and across a crash), each invalid or failing one dead-lettered on
its own while the rest of its batch is applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlcp.contracts import DataArrived, dlq_topic, encode_event, new_event
from tests.conftest import Infra, free_port
from tests.integration.kafka_tools import create_topics, lag, produce, read_all
from tests.integration.test_runtime_crash import (
    arrived,
    env_for,
    fetchval,
    wait_ready,
    wait_settled,
)

pytestmark = pytest.mark.integration

APP = str(Path(__file__).with_name("runtime_app.py"))


async def test_batches_apply_valid_events_once_and_dead_letter_the_rest(
    infra: Infra, unique: str, spawn: Any
) -> None:
    prefix, sink = f"t{unique}.", f"dst_{unique}"
    topic = f"{prefix}{DataArrived.TYPE}"
    await create_topics(infra.admin, [topic, dlq_topic(topic)], partitions=3)
    good = [
        new_event(arrived(f"b{i}", dataset=f"ds{i % 3}"), source="mlcp/test") for i in range(600)
    ]
    broken = json.loads(encode_event(good[0]))
    broken["data"]["completeness"] = 1.5
    records = [(e.subject.encode(), encode_event(e), []) for e in good]
    records.insert(100, (b"ds1", b"\xff\xfe not utf-8", []))
    records.insert(300, (b"ds2", json.dumps(broken).encode(), []))
    records.insert(400, (b"ds0", encode_event(good[5]), []))  # the same event again
    failing = new_event(arrived("fail-7", dataset="ds0"), source="mlcp/test")
    records.insert(450, (b"ds0", encode_event(failing), []))
    await produce(infra.admin, topic, records)

    port = free_port()
    env = env_for(infra, sink, prefix, MLCP_HTTP_PORT=str(port), MLCP_HANDLER_MAX_ATTEMPTS="2")
    consumer = spawn([APP, "consume-batch"], env, "batch")
    await wait_ready(port, consumer)

    await wait_settled(
        infra, f"{prefix}mlcp-{sink}", topic, timeout=90, what="every batch to be settled"
    )
    assert await fetchval(infra, f"SELECT count(*) FROM {sink}.ledger") == 600, consumer.output()
    assert await fetchval(infra, f"SELECT count(DISTINCT event_id) FROM {sink}.ledger") == 600
    letters = await read_all(infra.admin, dlq_topic(topic))
    reasons = sorted(dict(r.headers)["mlcp-dlq-reason"].decode() for r in letters)
    assert reasons == ["handler_failed", "invalid_data", "invalid_json"]


async def test_batch_consumer_killed_before_offset_commit_applies_once(
    infra: Infra, unique: str, spawn: Any
) -> None:
    prefix, sink = f"t{unique}.", f"dst_{unique}"
    topic = f"{prefix}{DataArrived.TYPE}"
    await create_topics(infra.admin, [topic], partitions=1)
    events = [new_event(arrived(f"b{i}"), source="mlcp/test") for i in range(300)]
    await produce(infra.admin, topic, [(b"ds", encode_event(e), []) for e in events])

    env = env_for(infra, sink, prefix, MLCP_CRASH_AT="consumer.after_commit")
    crashing = spawn([APP, "consume-batch"], env, "batch")
    assert await crashing.wait_exit() == -9, crashing.output()
    first_batch = await fetchval(infra, f"SELECT count(*) FROM {sink}.ledger")
    assert 0 < first_batch <= 200, "one batch was committed to the database"
    assert await lag(infra.admin, f"{prefix}mlcp-{sink}", topic) is None

    port = free_port()
    env = env_for(infra, sink, prefix, MLCP_HTTP_PORT=str(port))
    consumer = spawn([APP, "consume-batch"], env, "batch")
    await wait_ready(port, consumer)

    await wait_settled(
        infra,
        f"{prefix}mlcp-{sink}",
        topic,
        timeout=90,
        what="the restarted consumer to settle everything",
    )
    assert await fetchval(infra, f"SELECT count(*) FROM {sink}.ledger") == 300
    assert await fetchval(infra, f"SELECT count(DISTINCT event_id) FROM {sink}.ledger") == 300
