"""Models and their versions."""

from __future__ import annotations

from typing import Any

from mlcp.registry.domain import ModelVersion, Status
from mlcp.registry.store._json import dump, row
from mlcp.runtime.db import Conn


async def lock_model(conn: Conn, model: str) -> None:
    """Create the model if new and lock its row: one writer decides its versions at a time."""
    await conn.execute("INSERT INTO models (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", model)
    await conn.execute("SELECT 1 FROM models WHERE name = $1 FOR UPDATE", model)


async def lock_existing_model(conn: Conn, model: str) -> bool:
    """Lock a known model's row (as the handlers do, model first); False if it is unknown."""
    return bool(await conn.fetchval("SELECT true FROM models WHERE name = $1 FOR UPDATE", model))


async def model_exists(conn: Conn, model: str) -> bool:
    """Whether the registry knows ``model``."""
    return bool(await conn.fetchval("SELECT true FROM models WHERE name = $1", model))


async def version_of_run(conn: Conn, model: str, run_id: str) -> str | None:
    """The version registered from ``run_id``, if any."""
    value = await conn.fetchval(
        "SELECT version FROM versions WHERE model = $1 AND run_id = $2", model, run_id
    )
    return None if value is None else str(value)


def _version(record: Any) -> ModelVersion:
    values = row(record)
    for part in ("major", "minor", "patch"):  # SemVer parts: for ordering in SQL only
        values.pop(part, None)
    return ModelVersion(**values)


async def latest_version(conn: Conn, model: str) -> ModelVersion | None:
    """The highest version of ``model`` (SemVer order), or None."""
    record = await conn.fetchrow(
        """SELECT * FROM versions WHERE model = $1
           ORDER BY major DESC, minor DESC, patch DESC LIMIT 1""",
        model,
    )
    return None if record is None else _version(record)


async def insert_version(conn: Conn, v: ModelVersion) -> None:
    """Store a new candidate version, with the lifecycle it was registered in
    (``correlation_id``, ``traceparent``)."""
    major, minor, patch = (int(p) for p in v.version.split("."))
    await conn.execute(
        """INSERT INTO versions (model, version, major, minor, patch, run_id, previous_version,
               bump, status, metrics, params, baseline, datasets, feature_schema, label,
               artifact_uri, artifact_sha256, artifact_format, artifact_size, reference_profile,
               code_version, entrypoint, environment, training_reason, duration_s, owner,
               cause_event_id, created_at, status_changed_at, correlation_id, traceparent)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'candidate', $9::jsonb, $10::jsonb,
               $11::jsonb, $12::jsonb, $13::jsonb, $14, $15, $16, $17, $18, $19::jsonb, $20, $21,
               $22::jsonb, $23, $24, $25, $26, $27, $27, $28, $29)""",
        v.model,
        v.version,
        major,
        minor,
        patch,
        v.run_id,
        v.previous_version,
        v.bump,
        dump(v.metrics),
        dump(v.params),
        dump(v.baseline),
        dump(v.datasets),
        dump(v.feature_schema),
        v.label,
        v.artifact_uri,
        v.artifact_sha256,
        v.artifact_format,
        v.artifact_size,
        dump(v.reference_profile),
        v.code_version,
        v.entrypoint,
        dump(v.environment),
        v.training_reason,
        v.duration_s,
        v.owner,
        v.cause_event_id,
        v.created_at,
        v.correlation_id,
        v.traceparent,
    )


async def get_version(conn: Conn, model: str, version: str) -> ModelVersion | None:
    """One version with all its metadata, or None."""
    record = await conn.fetchrow(
        "SELECT * FROM versions WHERE model = $1 AND version = $2", model, version
    )
    return None if record is None else _version(record)


async def lifecycle_of(conn: Conn, model: str, version: str) -> tuple[str | None, str | None]:
    """(correlation id, traceparent) of a version's lifecycle; (None, None) if not kept."""
    row = await conn.fetchrow(
        "SELECT correlation_id, traceparent FROM versions WHERE model = $1 AND version = $2",
        model,
        version,
    )
    return (None, None) if row is None else (row["correlation_id"], row["traceparent"])


async def version_status(conn: Conn, model: str, version: str) -> Status | None:
    """The status of a version (locked until the transaction ends), or None if unknown."""
    value = await conn.fetchval(
        "SELECT status FROM versions WHERE model = $1 AND version = $2 FOR UPDATE",
        model,
        version,
    )
    return None if value is None else value


_SUMMARY = """model, version, status, run_id, previous_version, bump, metrics, artifact_uri,
    artifact_sha256, owner, created_at, status_changed_at"""


async def list_versions(
    conn: Conn, model: str, *, status: str | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    """Versions of a model, newest first, optionally with one status."""
    records = await conn.fetch(
        f"""SELECT {_SUMMARY} FROM versions
            WHERE model = $1 AND ($2::text IS NULL OR status = $2)
            ORDER BY major DESC, minor DESC, patch DESC LIMIT $3 OFFSET $4""",
        model,
        status,
        limit,
        offset,
    )
    return [row(r) for r in records]


async def list_models(
    conn: Conn, *, prefix: str | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    """Models by name with their latest version and serving versions."""
    records = await conn.fetch(
        """SELECT m.name, m.created_at,
               (SELECT v.version FROM versions v WHERE v.model = m.name
                 ORDER BY major DESC, minor DESC, patch DESC LIMIT 1) AS latest_version,
               r.production, r.canary, r.canary_percent
           FROM models m LEFT JOIN rollouts r ON r.model = m.name
           WHERE $1::text IS NULL OR starts_with(m.name, $1)
           ORDER BY m.name LIMIT $2 OFFSET $3""",
        prefix,
        limit,
        offset,
    )
    return [dict(r) for r in records]
