"""Canary bakes and production rollback windows (``watches``)."""

from __future__ import annotations

from datetime import datetime

from mlcp.monitor.domain import NewWatch, Watch
from mlcp.runtime.db import Conn


class PgWatches:
    """``WatchStore`` in PostgreSQL."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def open(self, model: str) -> list[Watch]:
        """The model's open watches, locked, oldest first."""
        rows = await self._conn.fetch(
            """SELECT id, model, version, alias, baseline_version, started_at, until,
                      served_from, baseline_from, next_window
               FROM watches WHERE model = $1 AND ended_at IS NULL ORDER BY id FOR UPDATE""",
            model,
        )
        return [Watch(**dict(r)) for r in rows]

    async def start(self, watch: NewWatch) -> int:
        """Open a watch (the caller has ended any open watch of the same alias)."""
        return int(
            await self._conn.fetchval(
                """INSERT INTO watches (model, version, alias, baseline_version, started_at,
                                        until, served_from, baseline_from)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id""",
                watch.model,
                watch.version,
                watch.alias,
                watch.baseline_version,
                watch.started_at,
                watch.until,
                watch.served_from,
                watch.baseline_from,
            )
        )

    async def end_alias(
        self, model: str, alias: str, outcome: str, at: datetime, version: str | None = None
    ) -> None:
        """Close the open watch of ``alias`` (only if it watches ``version``, when given)."""
        await self._conn.execute(
            """UPDATE watches SET ended_at = $4, outcome = $3
               WHERE model = $1 AND alias = $2 AND ended_at IS NULL
                 AND ($5::text IS NULL OR version = $5)""",
            model,
            alias,
            outcome,
            at,
            version,
        )

    async def end(self, watch_id: int, outcome: str, at: datetime) -> None:
        """Close one watch."""
        await self._conn.execute(
            "UPDATE watches SET ended_at = $3, outcome = $2 WHERE id = $1", watch_id, outcome, at
        )

    async def advance(self, watch_id: int, next_window: int) -> None:
        """Remember which production watch window is judged next."""
        await self._conn.execute(
            "UPDATE watches SET next_window = $2 WHERE id = $1", watch_id, next_window
        )
