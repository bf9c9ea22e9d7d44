"""The audit log: keyed, hash-chained rows appended one writer at a time."""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from mlcp.registry import chain
from mlcp.registry.keys import AuditKey
from mlcp.registry.store._json import dump, row
from mlcp.runtime.db import Conn

# Serialises appends to the audit chain (one writer at a time extends it).
_AUDIT_LOCK = zlib.crc32(b"mlcp-registry-audit")


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
        dump(before),
        dump(after),
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
    return [row(r) for r in records]


def _chainrow(record: Any) -> chain.AuditRow:
    r = row(record)
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
        yield _chainrow(record)


async def unanchored_legacy_rows(conn: Conn) -> int:
    """How many rows predate the keyed chain, if no keyed row seals them yet (else 0)."""
    if await conn.fetchval("SELECT true FROM audit_log WHERE key_id IS NOT NULL LIMIT 1"):
        return 0
    return int(await conn.fetchval("SELECT count(*) FROM audit_log"))
