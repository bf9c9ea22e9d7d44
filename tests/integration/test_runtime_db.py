"""mlcp.runtime against a real PostgreSQL (and Kafka for the relay): migrations, inbox, outbox.

Every test works in its own schema ``t_<unique>``, dropped at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mlcp.contracts import CloudEvent, DataArrived, decode_event, new_event
from mlcp.runtime import inbox
from mlcp.runtime.db import create_pool
from mlcp.runtime.kafka import durable_producer
from mlcp.runtime.metrics import RuntimeMetrics
from mlcp.runtime.migrations import (
    Migration,
    MigrationError,
    load_migrations,
    migrate,
    runtime_migrations,
)
from mlcp.runtime.outbox import OutboxRelay, enqueue, notify_channel
from mlcp.runtime.retention import purge_once
from mlcp.runtime.settings import Settings
from tests.conftest import Infra, wait_for
from tests.integration.kafka_tools import create_topics, read_all

pytestmark = pytest.mark.integration

SHA = "b" * 64


def arrived(batch_id: str, dataset: str = "ds") -> CloudEvent[DataArrived]:
    return new_event(
        DataArrived(
            dataset=dataset,
            batch_id=batch_id,
            uri=f"file:///tmp/{batch_id}.csv",
            rows=5,
            sha256=SHA,
            completeness=1.0,
        ),
        source="mlcp/test",
    )


@pytest.fixture
async def schema(infra: Infra, unique: str) -> AsyncIterator[str]:
    """A fresh schema name, dropped (with everything in it) after the test."""
    name = f"t_{unique}"
    yield name
    conn = await asyncpg.connect(infra.database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def connect(infra: Infra) -> AsyncIterator[Any]:
    """Open plain connections that are closed after the test."""
    opened: list[asyncpg.Connection] = []

    async def open_one() -> asyncpg.Connection:
        conn = await asyncpg.connect(infra.database_url)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        await conn.close()


@pytest.fixture
async def pool(infra: Infra, schema: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on ``schema`` with the runtime tables (inbox, outbox) migrated."""
    conn = await asyncpg.connect(infra.database_url)
    try:
        await migrate(conn, schema, runtime_migrations())
    finally:
        await conn.close()
    pool = await create_pool(infra.database_url, schema=schema, max_size=4)
    yield pool
    await pool.close()


def write_migrations(directory: Path) -> list[Migration]:
    directory.mkdir()
    (directory / "001_items.sql").write_text(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);\n"
        "CREATE TABLE applied_log (name text NOT NULL);\n"  # no uniqueness on purpose
        "INSERT INTO applied_log VALUES ('001');\n"
    )
    (directory / "002_items_note.sql").write_text(
        "ALTER TABLE items ADD COLUMN note text;\nINSERT INTO applied_log VALUES ('002');\n"
    )
    return load_migrations(directory)


# --------------------------------------------------------------------------- migrations


async def test_migrate_applies_each_file_once_in_the_schema_with_checksums(
    schema: str, connect: Any, tmp_path: Path
) -> None:
    conn = await connect()
    migrations = runtime_migrations() + write_migrations(tmp_path / "m")

    first = await migrate(conn, schema, migrations)
    second = await migrate(conn, schema, migrations)

    assert first == [
        "000_inbox_outbox.sql",
        "000_inbox_outbox_002_batch_inbox.sql",
        "001_items.sql",
        "002_items_note.sql",
    ]
    assert second == []
    recorded = {
        r["name"]: r["checksum"]
        for r in await conn.fetch(f"SELECT name, checksum FROM {schema}.mlcp_migrations")
    }
    assert recorded == {m.name: hashlib.sha256(m.sql.encode()).hexdigest() for m in migrations}
    # Objects land in the service's schema, not in public.
    for table in ("mlcp_inbox", "mlcp_batch_inbox", "mlcp_outbox", "items"):
        assert await conn.fetchval("SELECT to_regclass($1)", f"{schema}.{table}") is not None
    assert await conn.fetchval("SELECT to_regclass('public.applied_log')") is None
    log = await conn.fetch(f"SELECT name FROM {schema}.applied_log ORDER BY name")
    assert [r["name"] for r in log] == ["001", "002"]
    columns = await conn.fetch(
        """SELECT column_name FROM information_schema.columns
           WHERE table_schema = $1 AND table_name = 'items' ORDER BY ordinal_position""",
        schema,
    )
    assert [c["column_name"] for c in columns] == ["id", "name", "note"]


async def test_migrate_applies_only_what_is_new(schema: str, connect: Any, tmp_path: Path) -> None:
    conn = await connect()
    one, two = write_migrations(tmp_path / "m")
    assert await migrate(conn, schema, [one]) == ["001_items.sql"]
    assert await migrate(conn, schema, [one, two]) == ["002_items_note.sql"]


async def test_migrate_refuses_an_edited_applied_migration(
    schema: str, connect: Any, tmp_path: Path
) -> None:
    conn, other = await connect(), await connect()
    one, two = write_migrations(tmp_path / "m")
    await migrate(conn, schema, [one])
    edited = Migration(one.name, one.sql + "\n-- tweaked after release\n")

    with pytest.raises(MigrationError, match=r"001_items\.sql was changed after it was applied"):
        await migrate(conn, schema, [edited, two])

    # Nothing after the edited file ran, and the checksum on record is still the original.
    assert await conn.fetchval(f"SELECT to_regclass('{schema}.items')") is not None
    names = await conn.fetch(f"SELECT name, checksum FROM {schema}.mlcp_migrations")
    assert [(r["name"], r["checksum"]) for r in names] == [(one.name, one.checksum)]
    # The advisory lock was released despite the error: another connection can migrate.
    assert await asyncio.wait_for(migrate(other, schema, [one, two]), 10) == [two.name]


async def test_migrate_rejects_an_invalid_schema_name(connect: Any) -> None:
    conn = await connect()
    with pytest.raises(MigrationError, match="invalid schema name"):
        await migrate(conn, "x; DROP TABLE y", [])


async def test_concurrent_migrations_apply_each_file_exactly_once(
    schema: str, connect: Any, tmp_path: Path
) -> None:
    directory = tmp_path / "m"
    migrations = runtime_migrations() + write_migrations(directory)
    # A slow first file keeps the race window open.
    slow = Migration("0005_slow.sql", "SELECT pg_sleep(0.3);")
    migrations = [migrations[0], slow, *migrations[1:]]
    a, b = await connect(), await connect()

    done_a, done_b = await asyncio.gather(
        migrate(a, schema, migrations), migrate(b, schema, migrations)
    )

    names = [m.name for m in migrations]
    assert sorted(done_a + done_b) == sorted(names)  # every file once, in one of the two calls
    assert [] in (done_a, done_b)  # the second caller found everything applied
    assert await a.fetchval(f"SELECT count(*) FROM {schema}.mlcp_migrations") == len(names)
    log = await a.fetch(f"SELECT name FROM {schema}.applied_log ORDER BY name")
    assert [r["name"] for r in log] == ["001", "002"]


# --------------------------------------------------------------------------- inbox


async def test_inbox_claims_an_event_once_per_consumer(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        async with conn.transaction():
            assert await inbox.claim(conn, "trainer:data.arrived", "evt-1", "data.arrived")
        async with conn.transaction():
            assert not await inbox.claim(conn, "trainer:data.arrived", "evt-1", "data.arrived")
        async with conn.transaction():
            assert await inbox.claim(conn, "monitor:data.arrived", "evt-1", "data.arrived")
        async with conn.transaction():
            assert await inbox.claim(conn, "trainer:data.arrived", "evt-2", "data.arrived")
        rows = await conn.fetch(
            "SELECT consumer, event_id, event_type FROM mlcp_inbox ORDER BY consumer, event_id"
        )
    assert [tuple(r) for r in rows] == [
        ("monitor:data.arrived", "evt-1", "data.arrived"),
        ("trainer:data.arrived", "evt-1", "data.arrived"),
        ("trainer:data.arrived", "evt-2", "data.arrived"),
    ]


async def test_inbox_claim_in_a_rolled_back_transaction_leaves_no_trace(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        assert await inbox.claim(conn, "trainer:data.arrived", "evt-9", "data.arrived")
        await tx.rollback()  # the handler failed after the claim
        assert await conn.fetchval("SELECT count(*) FROM mlcp_inbox") == 0
        async with conn.transaction():  # the redelivery is applied
            assert await inbox.claim(conn, "trainer:data.arrived", "evt-9", "data.arrived")


# --------------------------------------------------------------------------- outbox


async def test_outbox_enqueue_commits_with_the_transaction_and_notifies(
    pool: asyncpg.Pool, schema: str, connect: Any
) -> None:
    channel = notify_channel(schema)
    notes: list[str] = []
    listener = await connect()
    await listener.add_listener(channel, lambda _c, _pid, _ch, payload: notes.append(payload))
    topic = "t.data.arrived"

    async def received(count: int) -> bool:
        return len(notes) >= count

    lost, kept = arrived("lost", dataset="alpha"), arrived("kept", dataset="beta")

    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await enqueue(conn, schema, lost, topic=topic)
        await tx.rollback()
        assert await conn.fetchval("SELECT count(*) FROM mlcp_outbox") == 0
        # Notifications arrive in commit order: if the rolled-back enqueue had notified, it would
        # reach the listener before this marker.
        await conn.execute("SELECT pg_notify($1, 'marker')", channel)
        await wait_for(lambda: received(1), timeout=10, what="the marker notification")
        assert notes == ["marker"]

        async with conn.transaction():
            await enqueue(conn, schema, kept, topic=topic)
        await wait_for(lambda: received(2), timeout=10, what="the outbox notification")
        assert notes == ["marker", ""]

        rows = await conn.fetch(
            "SELECT event_id, topic, key, payload, headers, published_at FROM mlcp_outbox"
        )
    assert len(rows) == 1
    row = rows[0]
    assert row["event_id"] == kept.id
    assert row["topic"] == topic
    assert row["key"] == "beta"
    assert row["published_at"] is None
    assert decode_event(bytes(row["payload"])).id == kept.id
    assert json.loads(row["headers"])["content-type"] == "application/cloudevents+json"


@pytest.fixture
async def producer(infra: Infra, unique: str) -> AsyncIterator[Any]:
    producer = durable_producer(infra.admin, client_id=f"t-{unique}")
    await producer.start()
    yield producer
    await producer.stop()


async def enqueue_committed(
    pool: asyncpg.Pool, schema: str, events: list[CloudEvent[Any]], topic: str
) -> None:
    for event in events:
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, schema, event, topic=topic)


async def test_outbox_relay_publishes_pending_rows_in_order(
    infra: Infra, pool: asyncpg.Pool, schema: str, producer: Any, unique: str
) -> None:
    topic = Settings(topic_prefix=f"t{unique}.").topic(DataArrived.TYPE)
    await create_topics(infra.admin, [topic], partitions=1)
    metrics = RuntimeMetrics("t")
    relay = OutboxRelay(pool=pool, producer=producer, schema=schema, metrics=metrics, batch_size=2)
    events = [arrived(f"b{i}", dataset=f"ds{i % 2}") for i in range(3)]

    assert await relay.drain_once() == 0  # nothing pending yet
    await enqueue_committed(pool, schema, events, topic)
    assert await relay.pending() == 3

    assert await relay.drain_once() == 2  # one batch, oldest first
    assert await relay.pending() == 1
    assert await relay.drain_once() == 1
    assert await relay.pending() == 0
    assert await relay.drain_once() == 0
    assert metrics.registry.get_sample_value("mlcp_t_outbox_published_total") == 3

    records = await read_all(infra.admin, topic)
    assert [decode_event(r.value).id for r in records] == [e.id for e in events]
    assert [r.key for r in records] == [b"ds0", b"ds1", b"ds0"]
    for record in records:
        assert ("content-type", b"application/cloudevents+json") in list(record.headers)
    async with pool.acquire() as conn:
        unpublished = await conn.fetchval(
            "SELECT count(*) FROM mlcp_outbox WHERE published_at IS NULL"
        )
    assert unpublished == 0


async def test_outbox_relay_skips_while_another_relay_holds_the_lock(
    infra: Infra, pool: asyncpg.Pool, schema: str, producer: Any, unique: str
) -> None:
    topic = f"t{unique}.{DataArrived.TYPE}"
    await create_topics(infra.admin, [topic], partitions=1)
    relay = OutboxRelay(pool=pool, producer=producer, schema=schema, metrics=RuntimeMetrics("t"))
    await enqueue_committed(pool, schema, [arrived("x")], topic)
    lock_key = zlib.crc32(f"mlcp-outbox:{schema}".encode())

    async with pool.acquire() as other, other.transaction():
        assert await other.fetchval("SELECT pg_try_advisory_xact_lock($1)", lock_key)
        assert await relay.drain_once() == 0
        assert await relay.pending() == 1
    assert await relay.drain_once() == 1
    assert len(await read_all(infra.admin, topic)) == 1


async def test_outbox_purge_removes_only_published_rows_past_retention(
    infra: Infra, pool: asyncpg.Pool, schema: str, producer: Any, unique: str
) -> None:
    topic = f"t{unique}.{DataArrived.TYPE}"
    await create_topics(infra.admin, [topic], partitions=1)
    relay = OutboxRelay(pool=pool, producer=producer, schema=schema, metrics=RuntimeMetrics("t"))
    await enqueue_committed(pool, schema, [arrived("p1"), arrived("p2")], topic)
    assert await asyncio.wait_for(relay.drain(), 30) == 2
    waiting = arrived("still-pending")
    await enqueue_committed(pool, schema, [waiting], topic)

    async def purged(outbox_days: int) -> int:
        deleted = await purge_once(pool, inbox_days=7, outbox_days=outbox_days)
        return deleted["mlcp_outbox"]

    assert await purged(7) == 0  # published just now: kept
    assert await purged(0) == 2
    assert await purged(0) == 0
    assert await relay.pending() == 1
    async with pool.acquire() as conn:
        left = await conn.fetch("SELECT event_id, published_at FROM mlcp_outbox")
    assert [(r["event_id"], r["published_at"]) for r in left] == [(waiting.id, None)]


async def test_inbox_rows_past_retention_are_purged_in_chunks_and_recent_ones_kept(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        async with conn.transaction():
            assert await inbox.claim(conn, "trainer:data.arrived", "old-1", "data.arrived")
            assert await inbox.claim(conn, "trainer:data.arrived", "new-1", "data.arrived")
            fresh = await inbox.claim_many(
                conn, "monitor:p", [f"old-{i}" for i in range(5)] + ["new-2"]
            )
        assert len(fresh) == 6
        for table in ("mlcp_inbox", "mlcp_batch_inbox"):
            await conn.execute(
                f"""UPDATE {table} SET received_at = now() - interval '8 days'
                    WHERE event_id LIKE 'old%'"""
            )
    deleted = await purge_once(pool, inbox_days=7, outbox_days=7, chunk_rows=2)
    assert deleted == {"mlcp_inbox": 1, "mlcp_batch_inbox": 5, "mlcp_outbox": 0}
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT array_agg(event_id) FROM mlcp_inbox") == ["new-1"]
        assert await conn.fetchval("SELECT array_agg(event_id) FROM mlcp_batch_inbox") == ["new-2"]
        async with conn.transaction():  # the purged ids are forgotten: a redelivery applies
            assert await inbox.claim_many(conn, "monitor:p", ["old-0", "new-2"]) == {"old-0"}
