"""The runtime's delivery guarantees against real Kafka and PostgreSQL, in real processes, on
the authenticated bus with and without TLS (SASL_PLAINTEXT, SASL_SSL with the dev stack's CA).

* outbox relay SIGKILLed between publishing and marking rows sent → republished, applied once;
* consumer SIGKILLed after its transaction committed, before the offset commit → redelivered,
  applied once;
* poison records (invalid JSON, contract violation, unknown version, a handler that keeps
  failing) → ``<topic>.dlq`` with the reason and the original headers; the next record flows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from mlcp.contracts import DataArrived, TrainingRequested, dlq_topic, encode_event, new_event
from mlcp.runtime.migrations import load_migrations, migrate, runtime_migrations
from mlcp.runtime.outbox import enqueue
from tests.conftest import Infra, free_port, wait_for
from tests.integration.kafka_tools import create_topics, lag, produce, read_all

pytestmark = pytest.mark.integration

APP = str(Path(__file__).with_name("runtime_app.py"))


@pytest.fixture(params=["SASL_PLAINTEXT", "SASL_SSL"])
def infra(request: pytest.FixtureRequest, infra: Infra) -> Infra:
    """Every crash test twice: through the plain SASL listener and through the TLS one."""
    if request.param == "SASL_PLAINTEXT":
        return infra
    return request.getfixturevalue("tls_infra")  # type: ignore[no-any-return]


MIGRATIONS = Path(__file__).with_name("ledger_migrations")
SHA = "a" * 64


def arrived(batch_id: str, dataset: str = "ds") -> DataArrived:
    return DataArrived(
        dataset=dataset,
        batch_id=batch_id,
        uri=f"file:///tmp/{batch_id}.csv",
        rows=10,
        sha256=SHA,
        completeness=1.0,
    )


def env_for(infra: Infra, service: str, prefix: str, **extra: str) -> dict[str, str]:
    return {
        **infra.kafka_env("admin"),
        "MLCP_DATABASE_URL": infra.database_url,
        "MLCP_SERVICE_NAME": service,
        "MLCP_TOPIC_PREFIX": prefix,
        "MLCP_LOG_FORMAT": "text",
        "MLCP_RETRY_INITIAL_BACKOFF_S": "0.05",
        "MLCP_CONSUMER_SESSION_TIMEOUT_MS": "6000",
        **extra,
    }


async def fetchval(infra: Infra, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(infra.database_url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def wait_settled(infra: Infra, group: str, topic: str, *, timeout: float, what: str) -> None:
    """Poll until ``group`` has committed every record of ``topic``."""

    async def consumed_all() -> bool:
        return await lag(infra.admin, group, topic) == 0

    await wait_for(consumed_all, timeout=timeout, what=what)


async def wait_ready(port: int, proc: Any, timeout: float = 120) -> None:
    """Until the service answers /readyz (generous: a loaded 2-core machine starts slowly)."""

    async def ready() -> bool:
        assert proc.popen.poll() is None, f"service exited:\n{proc.output()}"
        try:
            async with httpx.AsyncClient() as client:
                return (
                    await client.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                ).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(ready, timeout=timeout, what="/readyz")


async def test_outbox_relay_killed_after_publish_is_applied_once(
    infra: Infra, unique: str, spawn: Any
) -> None:
    prefix, source, sink = f"t{unique}.", f"src_{unique}", f"dst_{unique}"
    topic = f"{prefix}{DataArrived.TYPE}"
    await create_topics(infra.admin, [topic], partitions=3)
    conn = await asyncpg.connect(infra.database_url)
    try:
        await migrate(conn, source, runtime_migrations() + load_migrations(MIGRATIONS))
        async with conn.transaction():
            await conn.execute(f"SET LOCAL search_path TO {source}")
            for i in range(20):
                await enqueue(
                    conn, source, new_event(arrived(f"b{i}"), source="mlcp/test"), topic=topic
                )
    finally:
        await conn.close()

    crashed = spawn(
        [APP, "relay"],
        env_for(infra, source, prefix, MLCP_CRASH_AT="outbox.after_publish"),
        "relay",
    )
    assert await crashed.wait_exit() == -9, crashed.output()
    pending = f"SELECT count(*) FROM {source}.mlcp_outbox WHERE published_at IS NULL"
    assert await fetchval(infra, pending) == 20, "the crash left every row pending"
    assert len(await read_all(infra.admin, topic)) == 20, "the rows did reach Kafka"

    relay = spawn([APP, "relay"], env_for(infra, source, prefix), "relay")
    assert await relay.wait_exit() == 0, relay.output()
    assert await fetchval(infra, pending) == 0
    assert len(await read_all(infra.admin, topic)) == 40, "republished after the crash"

    port = free_port()
    consumer = spawn(
        [APP, "consume"], env_for(infra, sink, prefix, MLCP_HTTP_PORT=str(port)), "consume"
    )
    await wait_ready(port, consumer)

    await wait_settled(
        infra, f"{prefix}mlcp-{sink}", topic, timeout=60, what="the consumer to commit every record"
    )
    assert await fetchval(infra, f"SELECT count(*) FROM {sink}.ledger") == 20, consumer.output()
    assert await fetchval(infra, f"SELECT count(DISTINCT batch_id) FROM {sink}.ledger") == 20
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert (
        f'mlcp_{sink}_events_handled_total{{outcome="duplicate",topic="{topic}"}} 20.0' in metrics
    )


async def test_consumer_killed_before_offset_commit_applies_once(
    infra: Infra, unique: str, spawn: Any
) -> None:
    prefix, sink = f"t{unique}.", f"dst_{unique}"
    topic = f"{prefix}{DataArrived.TYPE}"
    await create_topics(infra.admin, [topic], partitions=1)
    events = [new_event(arrived(f"b{i}"), source="mlcp/test") for i in range(5)]
    await produce(infra.admin, topic, [(b"ds", encode_event(e), []) for e in events])

    crashing = spawn(
        [APP, "consume"],
        env_for(infra, sink, prefix, MLCP_CRASH_AT="consumer.after_commit"),
        "consume",
    )
    assert await crashing.wait_exit() == -9, crashing.output()
    assert await fetchval(infra, f"SELECT count(*) FROM {sink}.ledger") == 1, (
        "first event committed"
    )
    assert await lag(infra.admin, f"{prefix}mlcp-{sink}", topic) is None, "no offset was committed"

    port = free_port()
    consumer = spawn(
        [APP, "consume"], env_for(infra, sink, prefix, MLCP_HTTP_PORT=str(port)), "consume"
    )
    await wait_ready(port, consumer)

    await wait_settled(
        infra,
        f"{prefix}mlcp-{sink}",
        topic,
        timeout=60,
        what="the restarted consumer to commit every record",
    )
    rows = await fetchval(infra, f"SELECT count(*) FROM {sink}.ledger")
    assert rows == 5, "each event applied exactly once"
    emitted = await fetchval(
        infra,
        f"SELECT count(*) FROM {sink}.mlcp_outbox WHERE topic = $1",
        f"{prefix}{TrainingRequested.TYPE}",
    )
    assert emitted == 5, "each event's follow-up emitted exactly once"
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert f'mlcp_{sink}_events_handled_total{{outcome="duplicate",topic="{topic}"}} 1.0' in metrics


async def test_poison_records_go_to_the_dlq_and_the_partition_flows(
    infra: Infra, unique: str, spawn: Any
) -> None:
    prefix, sink = f"t{unique}.", f"dst_{unique}"
    topic = f"{prefix}{DataArrived.TYPE}"
    await create_topics(infra.admin, [topic, dlq_topic(topic)], partitions=1)
    good = new_event(arrived("good"), source="mlcp/test")
    contract_broken = json.loads(encode_event(new_event(arrived("bad"), source="mlcp/test")))
    contract_broken["data"]["rows"] = -5
    unknown_version = json.loads(encode_event(new_event(arrived("v9"), source="mlcp/test")))
    unknown_version["type"] = "mlcp.data.arrived.v9"
    failing = new_event(arrived("fail-1"), source="mlcp/test")
    header = [("x-origin", b"pipeline-7")]
    await produce(
        infra.admin,
        topic,
        [
            (b"ds", b"{not json", header),
            (b"ds", json.dumps(contract_broken).encode(), header),
            (b"ds", json.dumps(unknown_version).encode(), header),
            (b"ds", encode_event(failing), header),
            (b"ds", encode_event(good), header),
        ],
    )
    port = free_port()
    consumer = spawn(
        [APP, "consume"],
        env_for(infra, sink, prefix, MLCP_HTTP_PORT=str(port), MLCP_HANDLER_MAX_ATTEMPTS="3"),
        "consume",
    )
    await wait_ready(port, consumer)

    await wait_settled(
        infra, f"{prefix}mlcp-{sink}", topic, timeout=60, what="every record to be settled"
    )
    assert await fetchval(infra, f"SELECT array_agg(batch_id) FROM {sink}.ledger") == ["good"]

    letters = await read_all(infra.admin, dlq_topic(topic))
    reasons = [dict(r.headers)["mlcp-dlq-reason"].decode() for r in letters]
    assert reasons == ["invalid_json", "invalid_data", "unknown_type", "handler_failed"]
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["x-origin"] == b"pipeline-7", "original headers kept"
        assert headers["mlcp-dlq-topic"].decode() == topic
        assert headers["mlcp-dlq-error"], "the error is carried"
        assert letter.key == b"ds"
    assert letters[0].value == b"{not json", "the original bytes are kept for replay"
    assert b"rows" in dict(letters[1].headers)["mlcp-dlq-error"], "the error names the field"
    assert dict(letters[3].headers)["mlcp-dlq-attempts"] == b"3", "bounded retries"
    assert b"refusing batch fail-1" in dict(letters[3].headers)["mlcp-dlq-error"]
