"""API tokens (their secrets only as hashes) and their role grants."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from mlcp.runtime.db import Conn


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
