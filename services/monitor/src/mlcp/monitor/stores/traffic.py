"""Each version's prediction count and open drift window (``traffic``), and the open window's
encoded rows (``window_chunks``: one row per batch)."""

from __future__ import annotations

from mlcp.monitor.domain import OpenWindow, Traffic
from mlcp.monitor.drift import Chunk
from mlcp.runtime.db import Conn


class PgTraffic:
    """``TrafficStore`` in PostgreSQL."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def lock(self, model: str, version: str) -> Traffic:
        """The version's traffic row, locked until the transaction ends (created if new)."""
        await self._conn.execute(
            "INSERT INTO traffic (model, version) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            model,
            version,
        )
        row = await self._conn.fetchrow(
            """SELECT served, window_seq, window_size, window_started, window_ended FROM traffic
               WHERE model = $1 AND version = $2 FOR UPDATE""",
            model,
            version,
        )
        assert row is not None
        return Traffic(
            served=int(row["served"]),
            window=OpenWindow(
                seq=int(row["window_seq"]),
                size=int(row["window_size"]),
                started_at=row["window_started"],
                ended_at=row["window_ended"],
            ),
        )

    async def served(self, model: str, version: str) -> int:
        """Predictions of a version ingested so far."""
        value = await self._conn.fetchval(
            "SELECT served FROM traffic WHERE model = $1 AND version = $2", model, version
        )
        return int(value or 0)

    async def save(self, model: str, version: str, traffic: Traffic) -> None:
        """Store the new count and open window."""
        w = traffic.window
        await self._conn.execute(
            """UPDATE traffic SET served = $3, window_seq = $4, window_size = $5,
               window_started = $6, window_ended = $7 WHERE model = $1 AND version = $2""",
            model,
            version,
            traffic.served,
            w.seq,
            w.size,
            w.started_at,
            w.ended_at,
        )

    async def add_chunk(self, model: str, version: str, seq: int, chunk: Chunk) -> None:
        """Append rows to an open window."""
        await self._conn.execute(
            """INSERT INTO window_chunks (model, version, window_seq, rows, numeric, categorical)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            model,
            version,
            seq,
            chunk.rows,
            chunk.numeric,
            chunk.categorical,
        )

    async def take_chunks(self, model: str, version: str, seq: int) -> list[Chunk]:
        """Remove and return a closing window's chunks, in arrival order."""
        rows = await self._conn.fetch(
            """DELETE FROM window_chunks WHERE model = $1 AND version = $2 AND window_seq = $3
               RETURNING id, rows, numeric, categorical""",
            model,
            version,
            seq,
        )
        return [
            Chunk(r["rows"], r["numeric"], r["categorical"])
            for r in sorted(rows, key=lambda r: r["id"])
        ]
