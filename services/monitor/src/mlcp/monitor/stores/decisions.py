"""Every decision, recorded once under its key (``decisions``), and bad input counts
(``ingest_issues``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from mlcp.runtime.db import Conn


class PgDecisions:
    """``DecisionStore`` in PostgreSQL."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def record(
        self,
        model: str,
        version: str,
        window_id: str,
        kind: str,
        *,
        emitted: bool,
        payload: dict[str, Any],
    ) -> bool:
        """Record a decision once; False when it was taken before (then emit nothing)."""
        inserted = await self._conn.fetchval(
            """INSERT INTO decisions (model, version, window_id, kind, emitted, payload)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT DO NOTHING RETURNING true""",
            model,
            version,
            window_id,
            kind,
            emitted,
            json.dumps(payload),
        )
        return bool(inserted)

    async def latest_drift_share(self, model: str, version: str, since: datetime) -> float | None:
        """share_drifted of the version's latest drift window that ended at or after ``since``."""
        value = await self._conn.fetchval(
            """SELECT (payload->>'share_drifted')::float8 FROM decisions
               WHERE model = $1 AND version = $2 AND kind = 'drift'
                 AND (payload->'window'->>'end')::timestamptz >= $3
               ORDER BY (payload->'window'->>'end')::timestamptz DESC LIMIT 1""",
            model,
            version,
            since,
        )
        return None if value is None else float(value)

    async def add_issue(self, model: str, version: str, reason: str, count: int) -> None:
        """Count bad input (unknown version, missing features, bad values)."""
        await self._conn.execute(
            """INSERT INTO ingest_issues (model, version, reason, count) VALUES ($1, $2, $3, $4)
               ON CONFLICT (model, version, reason)
               DO UPDATE SET count = ingest_issues.count + $4, last_seen = now()""",
            model,
            version,
            reason,
            count,
        )
