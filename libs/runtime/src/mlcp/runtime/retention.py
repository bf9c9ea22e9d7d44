"""Retention of the runtime's own tables: inbox rows and published outbox rows.

Without it both grow for ever: at the monitor's ingest rate the batch inbox alone gains tens of
millions of rows an hour. A sweeper in every service process deletes, once an hour, inbox rows
older than ``MLCP_INBOX_RETENTION_DAYS`` and published outbox rows older than
``MLCP_OUTBOX_RETENTION_DAYS``, in chunks (short transactions, no long lock on a hot table),
found through the BRIN indexes on their timestamps.

The inbox's retention is the horizon of deduplication: an event delivered again after it (a
producer re-sending a week-old event) is applied again. Kafka's default topic retention is the
same 7 days, so a redelivery from the log itself cannot be older.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg

from mlcp.runtime.db import TRANSIENT_DB_ERRORS
from mlcp.runtime.metrics import RuntimeMetrics

log = logging.getLogger(__name__)

CHUNK_ROWS = 10_000
"""Rows deleted per statement: each chunk is its own short transaction."""


@dataclass(frozen=True)
class _Table:
    name: str
    stamp: str
    outbox: bool = False  # kept MLCP_OUTBOX_RETENTION_DAYS, and only once published


_TABLES = (
    _Table("mlcp_inbox", "received_at"),
    _Table("mlcp_batch_inbox", "received_at"),
    _Table("mlcp_outbox", "published_at", outbox=True),
)


async def purge_once(
    pool: asyncpg.Pool, *, inbox_days: int, outbox_days: int, chunk_rows: int = CHUNK_ROWS
) -> dict[str, int]:
    """Delete what is past retention now; the rows deleted per table."""
    deleted: dict[str, int] = {}
    for table in _TABLES:
        days = outbox_days if table.outbox else inbox_days
        total = 0
        while True:
            async with pool.acquire() as conn:
                status = await conn.execute(
                    f"""DELETE FROM {table.name} WHERE ctid = ANY(ARRAY(
                            SELECT ctid FROM {table.name}
                            WHERE {table.stamp} < now() - make_interval(days => $1)
                            LIMIT $2))""",
                    days,
                    chunk_rows,
                )
            count = int(status.split()[-1])
            total += count
            if count < chunk_rows:
                break
        deleted[table.name] = total
    return deleted


@dataclass(frozen=True)
class RetentionSweeper:
    """Runs :func:`purge_once` every ``interval_s`` seconds (first after ``first_after_s``)."""

    pool: asyncpg.Pool
    metrics: RuntimeMetrics
    inbox_days: int
    outbox_days: int
    interval_s: float
    first_after_s: float = 60.0

    async def run(self) -> None:
        """Sweep for ever; a failed sweep is logged and tried again at the next interval."""
        await asyncio.sleep(min(self.first_after_s, self.interval_s))
        while True:
            with contextlib.suppress(*TRANSIENT_DB_ERRORS):
                try:
                    deleted = await purge_once(
                        self.pool, inbox_days=self.inbox_days, outbox_days=self.outbox_days
                    )
                except asyncpg.PostgresError as exc:
                    log.warning("retention sweep failed: %s", exc)
                else:
                    for table, count in deleted.items():
                        if count:
                            self.metrics.retention_deleted.labels(table).inc(count)
                            log.info("retention: %d rows deleted from %s", count, table)
            await asyncio.sleep(self.interval_s)
