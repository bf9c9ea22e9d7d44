"""SQL of the trainer's projection of the registry: each version's artifact and which version
serves production (asyncpg, inside the caller's transaction)."""

from __future__ import annotations

from mlcp.runtime.db import Conn
from mlcp.trainer.domain import StoredArtifact


async def record_version(
    conn: Conn, *, model: str, version: str, run_id: str, uri: str, sha256: str, fmt: str
) -> None:
    """Remember a registered version's artifact (to score it when it serves production)."""
    await conn.execute(
        """INSERT INTO model_versions
               (model, version, run_id, artifact_uri, artifact_sha256, artifact_format)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
        model,
        version,
        run_id,
        uri,
        sha256,
        fmt,
    )


async def production_version(conn: Conn, model: str) -> str | None:
    """The version the trainer believes serves ``model`` in production."""
    value = await conn.fetchval("SELECT version FROM production WHERE model = $1", model)
    return None if value is None else str(value)


async def set_production(conn: Conn, model: str, version: str | None, event_id: str) -> None:
    """Move the production projection of ``model``."""
    await conn.execute(
        """INSERT INTO production (model, version, event_id) VALUES ($1, $2, $3)
           ON CONFLICT (model) DO UPDATE
           SET version = EXCLUDED.version, event_id = EXCLUDED.event_id, updated_at = now()""",
        model,
        version,
        event_id,
    )


async def production_artifact(conn: Conn, model: str) -> StoredArtifact | None:
    """The production version's artifact, when both are known."""
    row = await conn.fetchrow(
        """SELECT v.version, v.artifact_uri, v.artifact_sha256, v.artifact_format
           FROM production p JOIN model_versions v ON v.model = p.model AND v.version = p.version
           WHERE p.model = $1""",
        model,
    )
    if row is None:
        return None
    return StoredArtifact(
        row["version"], row["artifact_uri"], row["artifact_sha256"], row["artifact_format"]
    )
