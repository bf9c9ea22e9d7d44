"""SQL of the registry on asyncpg: versions, aliases, rollouts, tokens and the audit log.

Every function takes the caller's connection (inside its transaction) and returns plain dicts or
domain values; JSON columns are encoded and decoded here so the rest of the service never sees
SQL types. Tables live in the service's schema (the pool's search_path).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from mlcp.registry import chain, domain
from mlcp.registry.domain import Rollout, Transition
from mlcp.registry.keys import AuditKey
from mlcp.runtime.db import Conn

_JSON_COLUMNS = (
    "metrics",
    "params",
    "baseline",
    "datasets",
    "feature_schema",
    "reference_profile",
    "environment",
    "before",
    "after",
)
# Serialises appends to the audit chain (one writer at a time extends it).
_AUDIT_LOCK = zlib.crc32(b"mlcp-registry-audit")


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _row(record: Any) -> dict[str, Any]:
    out = dict(record)
    for name in _JSON_COLUMNS:
        if isinstance(out.get(name), str):
            out[name] = json.loads(out[name])
    return out


# --- models and versions -----------------------------------------------------------------------


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


async def latest_version(conn: Conn, model: str) -> dict[str, Any] | None:
    """The highest version of ``model`` (SemVer order), or None."""
    record = await conn.fetchrow(
        """SELECT * FROM versions WHERE model = $1
           ORDER BY major DESC, minor DESC, patch DESC LIMIT 1""",
        model,
    )
    return None if record is None else _row(record)


async def insert_version(conn: Conn, v: dict[str, Any]) -> None:
    """Store a new version (``v`` holds every column; JSON values as Python objects), with the
    lifecycle it was registered in (``correlation_id``, ``traceparent``)."""
    major, minor, patch = (int(p) for p in v["version"].split("."))
    await conn.execute(
        """INSERT INTO versions (model, version, major, minor, patch, run_id, previous_version,
               bump, status, metrics, params, baseline, datasets, feature_schema, label,
               artifact_uri, artifact_sha256, artifact_format, artifact_size, reference_profile,
               code_version, entrypoint, environment, training_reason, duration_s, owner,
               cause_event_id, created_at, status_changed_at, correlation_id, traceparent)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'candidate', $9::jsonb, $10::jsonb,
               $11::jsonb, $12::jsonb, $13::jsonb, $14, $15, $16, $17, $18, $19::jsonb, $20, $21,
               $22::jsonb, $23, $24, $25, $26, $27, $27, $28, $29)""",
        v["model"],
        v["version"],
        major,
        minor,
        patch,
        v["run_id"],
        v["previous_version"],
        v["bump"],
        _dump(v["metrics"]),
        _dump(v["params"]),
        _dump(v["baseline"]),
        _dump(v["datasets"]),
        _dump(v["feature_schema"]),
        v["label"],
        v["artifact_uri"],
        v["artifact_sha256"],
        v["artifact_format"],
        v["artifact_size"],
        _dump(v["reference_profile"]),
        v["code_version"],
        v["entrypoint"],
        _dump(v["environment"]),
        v["training_reason"],
        v["duration_s"],
        v["owner"],
        v["cause_event_id"],
        v["created_at"],
        v["correlation_id"],
        v["traceparent"],
    )


async def get_version(conn: Conn, model: str, version: str) -> dict[str, Any] | None:
    """One version with all its metadata, or None."""
    record = await conn.fetchrow(
        "SELECT * FROM versions WHERE model = $1 AND version = $2", model, version
    )
    return None if record is None else _row(record)


async def lifecycle_of(conn: Conn, model: str, version: str) -> tuple[str | None, str | None]:
    """(correlation id, traceparent) of a version's lifecycle; (None, None) if not kept."""
    row = await conn.fetchrow(
        "SELECT correlation_id, traceparent FROM versions WHERE model = $1 AND version = $2",
        model,
        version,
    )
    return (None, None) if row is None else (row["correlation_id"], row["traceparent"])


async def version_status(conn: Conn, model: str, version: str) -> domain.Status | None:
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
    return [_row(r) for r in records]


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


# --- status, rollout, aliases ------------------------------------------------------------------


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


# --- tokens and grants -------------------------------------------------------------------------


async def insert_token(
    conn: Conn, token_id: str, principal: str, secret_hash: str, description: str | None, by: str
) -> None:
    """Store a new token (its secret only as a hash)."""
    await conn.execute(
        """INSERT INTO tokens (id, principal, secret_hash, description, created_by)
           VALUES ($1, $2, $3, $4, $5)""",
        token_id,
        principal,
        secret_hash,
        description,
        by,
    )


async def token_auth(conn: Conn, token_id: str) -> dict[str, Any] | None:
    """A token's principal, hash, revocation and grants (role, expires_at, revoked_at)."""
    record = await conn.fetchrow(
        """SELECT t.principal, t.secret_hash, t.revoked_at,
               coalesce(array_agg(g.role) FILTER (WHERE g.id IS NOT NULL), '{}') AS roles,
               coalesce(array_agg(g.expires_at) FILTER (WHERE g.id IS NOT NULL), '{}') AS expires,
               coalesce(array_agg(g.revoked_at) FILTER (WHERE g.id IS NOT NULL), '{}') AS revoked
           FROM tokens t LEFT JOIN grants g ON g.token_id = t.id
           WHERE t.id = $1 GROUP BY t.id""",
        token_id,
    )
    return None if record is None else dict(record)


async def insert_grant(
    conn: Conn, token_id: str, role: str, expires_at: datetime | None, by: str
) -> dict[str, Any]:
    """Give a token a role (until ``expires_at``)."""
    record = await conn.fetchrow(
        """INSERT INTO grants (token_id, role, expires_at, granted_by) VALUES ($1, $2, $3, $4)
           RETURNING id, token_id, role, expires_at, granted_by, granted_at, revoked_at""",
        token_id,
        role,
        expires_at,
        by,
    )
    assert record is not None
    return dict(record)


async def revoke_grant(conn: Conn, grant_id: int, by: str, now: datetime) -> dict[str, Any] | None:
    """Revoke one grant; None when it does not exist or was already revoked."""
    record = await conn.fetchrow(
        """UPDATE grants SET revoked_at = $3, revoked_by = $2
           WHERE id = $1 AND revoked_at IS NULL
           RETURNING id, token_id, role, expires_at, granted_by, granted_at, revoked_at""",
        grant_id,
        by,
        now,
    )
    return None if record is None else dict(record)


async def revoke_token(conn: Conn, token_id: str, now: datetime) -> bool:
    """Revoke a token (all its grants stop working); False if unknown or already revoked."""
    result = await conn.execute(
        "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", token_id, now
    )
    return bool(result.endswith(" 1"))


async def list_tokens(conn: Conn) -> list[dict[str, Any]]:
    """Every token with its grants (never the hashes)."""
    records = await conn.fetch(
        """SELECT t.id, t.principal, t.description, t.created_by, t.created_at, t.revoked_at,
               coalesce(json_agg(json_build_object('id', g.id, 'role', g.role,
                   'expires_at', g.expires_at, 'granted_by', g.granted_by,
                   'granted_at', g.granted_at, 'revoked_at', g.revoked_at) ORDER BY g.id)
                   FILTER (WHERE g.id IS NOT NULL), '[]') AS grants
           FROM tokens t LEFT JOIN grants g ON g.token_id = t.id
           GROUP BY t.id ORDER BY t.created_at, t.id"""
    )
    return [{**dict(r), "grants": json.loads(r["grants"])} for r in records]


async def token_exists(conn: Conn, token_id: str) -> bool:
    """Whether a token with this id exists."""
    return bool(await conn.fetchval("SELECT true FROM tokens WHERE id = $1", token_id))


# --- audit log ---------------------------------------------------------------------------------


def audit_entry(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    model: str | None,
    version: str | None,
    before: Any,
    after: Any,
    cause_event_id: str | None,
    key_id: str | None = None,
) -> dict[str, Any]:
    """The content of an audit row exactly as it is hashed (a legacy row has no ``key_id``)."""
    entry = {
        "seq": seq,
        "at": at.isoformat(),
        "actor": actor,
        "action": action,
        "model": model,
        "version": version,
        "before": before,
        "after": after,
        "cause_event_id": cause_event_id,
    }
    if key_id is not None:
        entry["key_id"] = key_id
    return entry


async def lock_audit(conn: Conn) -> None:
    """Serialise with every other writer of the audit chain until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _AUDIT_LOCK)


async def append_audit(
    conn: Conn,
    key: AuditKey,
    *,
    actor: str,
    action: str,
    at: datetime,
    model: str | None = None,
    version: str | None = None,
    before: Any = None,
    after: Any = None,
    cause_event_id: str | None = None,
) -> tuple[int, str]:
    """Append one row keyed with ``key`` (in the caller's transaction); its (seq, hash)."""
    await lock_audit(conn)
    last = await conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq = 1 if last is None else int(last["seq"]) + 1
    prev = chain.GENESIS if last is None else str(last["hash"])
    # Round-trip through JSON so the hash covers exactly what jsonb gives back on verify.
    before = None if before is None else json.loads(json.dumps(before, default=str))
    after = None if after is None else json.loads(json.dumps(after, default=str))
    entry = audit_entry(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        model=model,
        version=version,
        before=before,
        after=after,
        cause_event_id=cause_event_id,
        key_id=key.key_id,
    )
    digest = chain.keyed_hash(key.mac_key, prev, entry)
    await conn.execute(
        """INSERT INTO audit_log (seq, at, actor, action, model, version, before, after,
               cause_event_id, prev_hash, hash, key_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10, $11, $12)""",
        seq,
        at,
        actor,
        action,
        model,
        version,
        _dump(before),
        _dump(after),
        cause_event_id,
        prev,
        digest,
        key.key_id,
    )
    return seq, digest


async def audit_rows(
    conn: Conn,
    *,
    model: str | None,
    action: str | None,
    actor: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
) -> list[dict[str, Any]]:
    """Audit rows matching the filters, oldest first."""
    records = await conn.fetch(
        """SELECT * FROM audit_log
           WHERE ($1::text IS NULL OR model = $1) AND ($2::text IS NULL OR action = $2)
             AND ($3::text IS NULL OR actor = $3) AND ($4::timestamptz IS NULL OR at >= $4)
             AND ($5::timestamptz IS NULL OR at <= $5)
           ORDER BY seq LIMIT $6 OFFSET $7""",
        model,
        action,
        actor,
        since,
        until,
        limit,
        offset,
    )
    return [_row(r) for r in records]


def _chain_row(record: Any) -> chain.AuditRow:
    r = _row(record)
    entry = audit_entry(
        seq=r["seq"],
        at=r["at"],
        actor=r["actor"],
        action=r["action"],
        model=r["model"],
        version=r["version"],
        before=r["before"],
        after=r["after"],
        cause_event_id=r["cause_event_id"],
        key_id=r["key_id"],
    )
    return chain.AuditRow(int(r["seq"]), r["key_id"], str(r["prev_hash"]), str(r["hash"]), entry)


async def audit_chain(conn: Conn, *, prefetch: int = 1000) -> AsyncIterator[chain.AuditRow]:
    """Every row in seq order, streamed through a cursor (``prefetch`` rows in memory at a
    time); must run inside a transaction."""
    async for record in conn.cursor("SELECT * FROM audit_log ORDER BY seq", prefetch=prefetch):
        yield _chain_row(record)


async def unanchored_legacy_rows(conn: Conn) -> int:
    """How many rows predate the keyed chain, if no keyed row seals them yet (else 0)."""
    if await conn.fetchval("SELECT true FROM audit_log WHERE key_id IS NOT NULL LIMIT 1"):
        return 0
    return int(await conn.fetchval("SELECT count(*) FROM audit_log"))
