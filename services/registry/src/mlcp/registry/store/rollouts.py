"""Rollout state and aliases, with every alias change in ``alias_history``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mlcp.registry.transitions import Rollout, Transition
from mlcp.runtime.db import Conn


async def get_rollout(conn: Conn, model: str) -> Rollout:
    """The model's rollout state (empty when nothing was ever promoted)."""
    record = await conn.fetchrow("SELECT * FROM rollouts WHERE model = $1", model)
    if record is None:
        return Rollout()
    return Rollout(
        canary=record["canary"],
        canary_percent=record["canary_percent"],
        production=record["production"],
        production_since=record["production_since"],
        rollback_target=record["rollback_target"],
    )


async def get_aliases(conn: Conn, model: str) -> dict[str, str]:
    """alias → version for every alias the model has now."""
    records = await conn.fetch("SELECT alias, version FROM aliases WHERE model = $1", model)
    return {r["alias"]: r["version"] for r in records}


async def apply_transition(
    conn: Conn,
    model: str,
    transition: Transition,
    *,
    actor: str,
    reason: str,
    cause_event_id: str | None,
    now: datetime,
) -> None:
    """Persist a decision: statuses, rollout state, alias moves and their history rows."""
    for version, status in transition.statuses.items():
        await conn.execute(
            """UPDATE versions SET status = $3, status_changed_at = $4
               WHERE model = $1 AND version = $2 AND status <> $3""",
            model,
            version,
            status,
            now,
        )
    r = transition.rollout
    await conn.execute(
        """INSERT INTO rollouts (model, canary, canary_percent, production, production_since,
               rollback_target, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (model) DO UPDATE SET canary = $2, canary_percent = $3, production = $4,
               production_since = $5, rollback_target = $6, updated_at = $7""",
        model,
        r.canary,
        r.canary_percent,
        r.production,
        r.production_since,
        r.rollback_target,
        now,
    )
    for move in transition.moves:
        revision = await conn.fetchval(
            """INSERT INTO alias_history (model, alias, version, previous_version,
                   traffic_percent, actor, reason, cause_event_id, at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id""",
            model,
            move.alias,
            move.version,
            move.previous_version,
            move.traffic_percent,
            actor,
            reason,
            cause_event_id,
            now,
        )
        if move.version is None:
            await conn.execute(
                "DELETE FROM aliases WHERE model = $1 AND alias = $2", model, move.alias
            )
        else:
            await conn.execute(
                """INSERT INTO aliases (model, alias, version, traffic_percent, revision,
                       updated_at)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (model, alias) DO UPDATE SET version = $3, traffic_percent = $4,
                       revision = $5, updated_at = $6""",
                model,
                move.alias,
                move.version,
                move.traffic_percent,
                revision,
                now,
            )


async def resolve_alias(conn: Conn, model: str, alias: str) -> dict[str, Any] | None:
    """What an inference service needs to load the alias: version, artifact, revision."""
    record = await conn.fetchrow(
        """SELECT a.version, a.traffic_percent, a.revision, a.updated_at, v.artifact_uri,
               v.artifact_sha256, v.artifact_format, v.status
           FROM aliases a JOIN versions v ON v.model = a.model AND v.version = a.version
           WHERE a.model = $1 AND a.alias = $2""",
        model,
        alias,
    )
    return None if record is None else dict(record)


async def alias_revision(conn: Conn, model: str, alias: str) -> int | None:
    """The alias' current revision only (the ETag of a conditional request)."""
    value = await conn.fetchval(
        "SELECT revision FROM aliases WHERE model = $1 AND alias = $2", model, alias
    )
    return None if value is None else int(value)


async def alias_history(
    conn: Conn, model: str, alias: str | None, *, limit: int, offset: int
) -> list[dict[str, Any]]:
    """Alias changes of a model, newest first (one alias or all)."""
    records = await conn.fetch(
        """SELECT id, alias, version, previous_version, traffic_percent, actor, reason,
               cause_event_id, at
           FROM alias_history WHERE model = $1 AND ($2::text IS NULL OR alias = $2)
           ORDER BY id DESC LIMIT $3 OFFSET $4""",
        model,
        alias,
        limit,
        offset,
    )
    return [dict(r) for r in records]


async def alias_at(conn: Conn, model: str, alias: str, at: datetime) -> dict[str, Any] | None:
    """The last change of ``alias`` at or before ``at`` (its version is what served then)."""
    record = await conn.fetchrow(
        """SELECT id, version, previous_version, traffic_percent, actor, reason,
               cause_event_id, at
           FROM alias_history WHERE model = $1 AND alias = $2 AND at <= $3
           ORDER BY at DESC, id DESC LIMIT 1""",
        model,
        alias,
        at,
    )
    return None if record is None else dict(record)
