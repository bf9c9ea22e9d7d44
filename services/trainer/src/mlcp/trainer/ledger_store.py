"""SQL of the ledger: dataset heads, accepted batches, duplicates and refusals (asyncpg, inside
the caller's transaction; search_path = the trainer's schema).

Lock order, everywhere: ``datasets`` row, then ``model_triggers`` row (``trigger_store``).
Holding the dataset row makes the ledger of one dataset strictly sequential, so two trainer
instances (or a redelivery racing the original) can never both count the same rows or both
cross the same threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlcp.runtime.db import Conn
from mlcp.trainer.ledger import (
    DatasetHead,
    Duplicate,
    KnownBatches,
    LedgerBatch,
    LedgerEntry,
    Rejection,
)


async def lock_dataset(conn: Conn, dataset: str) -> DatasetHead:
    """Create the dataset's head if new and lock it for the rest of the transaction."""
    # One round trip: the no-op update takes the row lock and returns the committed head.
    row = await conn.fetchrow(
        """INSERT INTO datasets (dataset) VALUES ($1)
           ON CONFLICT (dataset) DO UPDATE SET dataset = EXCLUDED.dataset
           RETURNING last_seq, total_rows""",
        dataset,
    )
    assert row is not None
    return DatasetHead(dataset, int(row["last_seq"]), int(row["total_rows"]))


async def known_batches(
    conn: Conn, dataset: str, batch_ids: list[str], sha256s: list[str]
) -> KnownBatches:
    """The ledger's batches of ``dataset`` with any of these ids or contents (one round trip)."""
    rows = await conn.fetch(
        """SELECT batch_id, sha256, seq FROM ledger
           WHERE dataset = $1 AND (batch_id = ANY($2::text[]) OR sha256 = ANY($3::text[]))
           ORDER BY seq""",
        dataset,
        batch_ids,
        sha256s,
    )
    by_id: dict[str, str] = {}
    by_content: dict[str, tuple[str, int]] = {}
    for r in rows:
        by_id[r["batch_id"]] = r["sha256"]
        by_content.setdefault(r["sha256"], (r["batch_id"], int(r["seq"])))
    return KnownBatches(by_id, by_content)


async def record_duplicates(conn: Conn, duplicates: Sequence[Duplicate]) -> None:
    """Remember re-announced batches (one statement; a redelivered event is recorded once)."""
    if not duplicates:
        return
    await conn.execute(
        """INSERT INTO duplicate_batches (event_id, dataset, batch_id, uri, rows, sha256,
                                          of_batch_id, of_seq)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                                $6::text[], $7::text[], $8::bigint[])
           ON CONFLICT DO NOTHING""",
        [d.event_id for d in duplicates],
        [d.data.dataset for d in duplicates],
        [d.data.batch_id for d in duplicates],
        [d.data.uri for d in duplicates],
        [d.data.rows for d in duplicates],
        [d.data.sha256 for d in duplicates],
        [d.of_batch_id for d in duplicates],
        [d.of_seq for d in duplicates],
    )


async def append_ledger(conn: Conn, head: DatasetHead, entries: Sequence[LedgerEntry]) -> None:
    """Write accepted batches and move the dataset's head to ``head``, in one statement (the
    dataset row must be locked by this transaction)."""
    if not entries:
        return
    await conn.execute(
        """WITH added AS (
               INSERT INTO ledger (dataset, seq, batch_id, event_id, uri, rows, cum_rows, sha256,
                                   completeness, format, verified)
               SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[],
                                        $6::bigint[], $7::bigint[], $8::text[], $9::float8[],
                                        $10::text[], $11::bool[]))
           UPDATE datasets SET last_seq = $12, total_rows = $13, updated_at = now()
           WHERE dataset = $1""",
        head.dataset,
        [e.seq for e in entries],
        [e.data.batch_id for e in entries],
        [e.event_id for e in entries],
        [e.data.uri for e in entries],
        [e.data.rows for e in entries],
        [e.cum_rows for e in entries],
        [e.data.sha256 for e in entries],
        [e.data.completeness for e in entries],
        [e.data.format for e in entries],
        [e.verified for e in entries],
        head.last_seq,
        head.total_rows,
    )


async def record_rejected(conn: Conn, rejected: Sequence[Rejection]) -> None:
    """Remember refused batches (the ledger is not touched; a redelivery is recorded once)."""
    if not rejected:
        return
    await conn.executemany(
        """INSERT INTO rejected_batches
               (event_id, dataset, batch_id, uri, sha256_declared, sha256_actual, reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
        [
            (
                r.event_id,
                r.data.dataset,
                r.data.batch_id,
                r.data.uri,
                r.data.sha256,
                r.actual,
                r.reason,
            )
            for r in rejected
        ],
    )


async def batches_upto(conn: Conn, dataset: str, seq: int) -> list[LedgerBatch]:
    """Every accepted batch of ``dataset`` up to ledger position ``seq``, in ledger order, with
    how often its content was re-announced."""
    rows = await conn.fetch(
        """SELECT l.seq, l.batch_id, l.uri, l.rows, l.sha256, l.completeness, l.format,
                  (SELECT count(*) FROM duplicate_batches d
                   WHERE d.dataset = l.dataset AND d.of_seq = l.seq) AS duplicates
           FROM ledger l WHERE l.dataset = $1 AND l.seq <= $2 ORDER BY l.seq""",
        dataset,
        seq,
    )
    return [
        LedgerBatch(
            int(r["seq"]),
            r["batch_id"],
            r["uri"],
            int(r["rows"]),
            r["sha256"],
            float(r["completeness"]),
            r["format"],
            int(r["duplicates"]),
        )
        for r in rows
    ]


async def event_ids_after(conn: Conn, dataset: str, seq: int, limit: int) -> list[tuple[int, str]]:
    """(seq, CloudEvents id) of the batches after ledger position ``seq`` (the most recent
    ``limit``), in ledger order."""
    rows = await conn.fetch(
        """SELECT seq, event_id FROM (SELECT event_id, seq FROM ledger
                                      WHERE dataset = $1 AND seq > $2
                                      ORDER BY seq DESC LIMIT $3) recent ORDER BY seq""",
        dataset,
        seq,
        limit,
    )
    return [(int(r["seq"]), r["event_id"]) for r in rows]
