"""The monitor's read model for its HTTP API: everything it knows about a model, in one read."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from mlcp.runtime.db import Conn


async def model_status(conn: Conn, model: str) -> dict[str, Any]:
    """Everything the monitor knows about a model, for the HTTP API."""
    versions = await conn.fetch(
        """SELECT v.version, t.served, t.window_seq, t.window_size, t.window_started
           FROM versions v LEFT JOIN traffic t USING (model, version)
           WHERE v.model = $1 ORDER BY v.registered_at""",
        model,
    )
    aliases = await conn.fetch(
        "SELECT alias, version, since FROM aliases WHERE model = $1 ORDER BY alias", model
    )
    watches = await conn.fetch(
        """SELECT id, version, alias, baseline_version, started_at, until, ended_at, outcome
           FROM watches WHERE model = $1 ORDER BY id DESC LIMIT 20""",
        model,
    )
    decisions = await conn.fetch(
        """SELECT version, window_id, kind, emitted, decided_at, payload FROM decisions
           WHERE model = $1 ORDER BY decided_at DESC LIMIT 50""",
        model,
    )
    issues = await conn.fetch(
        """SELECT version, reason, count, last_seen FROM ingest_issues
           WHERE model = $1 ORDER BY version, reason""",
        model,
    )

    def plain(rows: list[Any]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            item = dict(row)
            for key, value in item.items():
                if isinstance(value, datetime):
                    item[key] = value.isoformat()
                elif key == "payload":
                    item[key] = json.loads(value)
            out.append(item)
        return out

    return {
        "model": model,
        "versions": plain(versions),
        "aliases": plain(aliases),
        "watches": plain(watches),
        "decisions": plain(decisions),
        "issues": plain(issues),
    }
