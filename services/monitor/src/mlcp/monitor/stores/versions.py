"""Registered versions and the aliases pointing at them (tables ``versions``, ``aliases``)."""

from __future__ import annotations

import json
from datetime import datetime

from mlcp.monitor.domain import Lifecycle
from mlcp.monitor.ports import VersionInfo
from mlcp.runtime.db import Conn


class PgVersions:
    """``VersionStore`` in PostgreSQL."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def add(
        self, model: str, version: str, info: VersionInfo, registered_at: datetime
    ) -> bool:
        """Keep a version; False if it was known (the first registration's facts stay)."""
        inserted = await self._conn.fetchval(
            """INSERT INTO versions (model, version, reference_profile, metrics, registered_at,
                                     correlation_id, traceparent)
               VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6, $7)
               ON CONFLICT DO NOTHING RETURNING true""",
            model,
            version,
            json.dumps(info.reference_profile),
            json.dumps(info.metrics),
            registered_at,
            info.lifecycle.correlation_id,
            info.lifecycle.traceparent,
        )
        return bool(inserted)

    async def get(self, model: str, version: str) -> VersionInfo | None:
        """A registered version, or None."""
        row = await self._conn.fetchrow(
            """SELECT reference_profile, metrics, correlation_id, traceparent FROM versions
               WHERE model = $1 AND version = $2""",
            model,
            version,
        )
        if row is None:
            return None
        return VersionInfo(
            json.loads(row["reference_profile"]),
            json.loads(row["metrics"]),
            Lifecycle(row["correlation_id"], row["traceparent"]),
        )


class PgAliases:
    """``AliasStore`` in PostgreSQL."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def set(self, model: str, alias: str, version: str, since: datetime) -> None:
        """Point ``alias`` at ``version``."""
        await self._conn.execute(
            """INSERT INTO aliases (model, alias, version, since) VALUES ($1, $2, $3, $4)
               ON CONFLICT (model, alias) DO UPDATE SET version = $3, since = $4""",
            model,
            alias,
            version,
            since,
        )

    async def drop(self, model: str, alias: str, version: str) -> None:
        """Remove ``alias`` if it still points at ``version``."""
        await self._conn.execute(
            "DELETE FROM aliases WHERE model = $1 AND alias = $2 AND version = $3",
            model,
            alias,
            version,
        )

    async def version(self, model: str, alias: str) -> str | None:
        """The version behind ``alias``, if any."""
        value = await self._conn.fetchval(
            "SELECT version FROM aliases WHERE model = $1 AND alias = $2", model, alias
        )
        return None if value is None else str(value)

    async def of(self, model: str, version: str) -> list[str]:
        """The aliases pointing at ``version`` (production first)."""
        rows = await self._conn.fetch(
            """SELECT alias FROM aliases WHERE model = $1 AND version = $2
               ORDER BY alias = 'production' DESC, alias""",
            model,
            version,
        )
        return [str(r["alias"]) for r in rows]
