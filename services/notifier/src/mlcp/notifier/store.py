"""SQL of the notifier: alerts, the per-(event, channel) delivery log and disabled channels.

The ``deliveries`` table is the durable queue the delivery loop sends from. A row moves
pending → sending (claimed with ``FOR UPDATE SKIP LOCKED``, tagged with the message id)
→ delivered | pending (retry later) | failed. When the outcome of a send is unknown — a row left
in ``sending`` by a dead process, or no answer after the request was written — the row goes back
to ``pending`` with that message id appended to ``uncertain_refs``: it is sent again, once per
uncertainty, marked as a possible repeat of those refs (no alert is lost).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from mlcp.notifier.domain import Alert
from mlcp.runtime.db import Conn


def wake_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel that wakes the delivery loop of ``schema``."""
    return f"mlcp_notifier_{schema}"


async def record_alert(conn: Conn, alert: Alert, channels: list[str]) -> bool:
    """Store an alert and one pending delivery per channel; False when this occurrence (its
    event id) was recorded before. The same fact happening again under a new id is a new alert."""
    inserted = await conn.fetchval(
        """
        INSERT INTO alerts (event_id, kind, model, severity, correlation_id, payload, occurred_at)
        VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
        ON CONFLICT (event_id) DO NOTHING
        RETURNING true
        """,
        alert.event_id,
        alert.kind,
        alert.model,
        alert.severity,
        alert.correlation_id,
        alert.model_dump_json(),
        alert.occurred_at,
    )
    if not inserted:
        return False
    if channels:
        await conn.executemany(
            "INSERT INTO deliveries (event_id, channel) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(alert.event_id, c) for c in channels],
        )
        # Fires on commit only: wakes the delivery loop at once instead of at its next poll.
        await conn.execute("SELECT pg_notify('mlcp_notifier_' || current_schema(), '')")
    return True


async def count_due(conn: Conn, channel: str, limit: int) -> int:
    """Pending deliveries of ``channel`` whose time has come (counted up to ``limit``)."""
    value = await conn.fetchval(
        """
        SELECT count(*) FROM (
            SELECT 1 FROM deliveries
            WHERE channel = $1 AND state = 'pending' AND next_attempt_at <= now()
            LIMIT $2) due
        """,
        channel,
        limit,
    )
    return int(value or 0)


@dataclass(frozen=True)
class Claimed:
    """The deliveries one message will carry."""

    message_id: uuid.UUID
    alerts: list[Alert]
    attempts: int
    """The highest attempt number among them (this send included)."""
    uncertain_refs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """event id → refs of earlier messages that may already have carried it (possible repeats)."""


async def claim(conn: Conn, channel: str, limit: int) -> Claimed | None:
    """Mark up to ``limit`` due deliveries (oldest first) as being sent in one new message."""
    message_id = uuid.uuid4()
    rows = await conn.fetch(
        """
        WITH due AS (
            SELECT event_id FROM deliveries
            WHERE channel = $1 AND state = 'pending' AND next_attempt_at <= now()
            ORDER BY created_at, event_id
            LIMIT $2
            FOR UPDATE SKIP LOCKED)
        UPDATE deliveries d
        SET state = 'sending', claimed_at = now(), message_id = $3, attempts = d.attempts + 1
        FROM due, alerts a
        WHERE d.channel = $1 AND d.event_id = due.event_id AND a.event_id = d.event_id
        RETURNING a.payload::text AS payload, d.created_at, d.attempts, d.event_id,
                  d.uncertain_refs
        """,
        channel,
        limit,
        message_id,
    )
    if not rows:
        return None
    ordered = sorted(rows, key=lambda r: r["created_at"])
    return Claimed(
        message_id,
        [Alert.model_validate_json(r["payload"]) for r in ordered],
        max(int(r["attempts"]) for r in rows),
        {
            r["event_id"]: tuple(str(ref) for ref in r["uncertain_refs"])
            for r in ordered
            if r["uncertain_refs"]
        },
    )


@dataclass(frozen=True)
class Delivered:
    """What a delivered message settled."""

    delays_s: list[float]
    """Each alert's delay since its event, in seconds."""
    repeats: int
    """How many of its alerts were sent marked as possible repeats."""


async def mark_delivered(conn: Conn, message_id: uuid.UUID, *, digest: bool) -> Delivered:
    """Deliveries of a message are done."""
    rows = await conn.fetch(
        """
        UPDATE deliveries d
        SET state = 'delivered', delivered_at = now(), digest = $2, last_error = NULL
        FROM alerts a
        WHERE d.message_id = $1 AND d.state = 'sending' AND a.event_id = d.event_id
        RETURNING extract(epoch FROM now() - a.occurred_at)::float8 AS delay,
                  cardinality(d.uncertain_refs) > 0 AS repeat
        """,
        message_id,
        digest,
    )
    return Delivered([float(r["delay"]) for r in rows], sum(1 for r in rows if r["repeat"]))


async def mark_retry(
    conn: Conn,
    message_id: uuid.UUID,
    *,
    delay_s: float,
    error: str,
    max_attempts: int,
    counts: bool,
    uncertain: bool = False,
) -> tuple[int, int]:
    """Put a message's deliveries back in the queue after ``delay_s``; those out of attempts
    fail. ``counts`` False (rate limited) does not spend an attempt. ``uncertain``: the channel
    may have received the message, so its id joins ``uncertain_refs`` and the next send is
    marked as a possible repeat. Returns (retried, failed)."""
    rows = await conn.fetch(
        """
        UPDATE deliveries
        SET attempts = CASE WHEN $5 THEN attempts ELSE attempts - 1 END,
            state = CASE WHEN $5 AND attempts >= $4 THEN 'failed' ELSE 'pending' END,
            next_attempt_at = now() + make_interval(secs => $2),
            message_id = CASE WHEN $5 AND attempts >= $4 THEN message_id END,
            uncertain_refs = CASE WHEN $6 THEN array_append(uncertain_refs, message_id)
                                  ELSE uncertain_refs END,
            last_error = $3
        WHERE message_id = $1 AND state = 'sending'
        RETURNING state
        """,
        message_id,
        delay_s,
        error,
        max_attempts,
        counts,
        uncertain,
    )
    failed = sum(1 for r in rows if r["state"] == "failed")
    return len(rows) - failed, failed


async def mark_failed(conn: Conn, message_id: uuid.UUID, error: str) -> int:
    """A permanent refusal: the deliveries are dead letters (kept, with the reason)."""
    result = await conn.execute(
        "UPDATE deliveries SET state = 'failed', last_error = $2 "
        "WHERE message_id = $1 AND state = 'sending'",
        message_id,
        error,
    )
    return int(result.split()[-1])


async def fail_channel(conn: Conn, channel: str, error: str) -> int:
    """Every undelivered delivery of a disabled channel fails with the reason."""
    result = await conn.execute(
        "UPDATE deliveries SET state = 'failed', last_error = $2 "
        "WHERE channel = $1 AND state IN ('pending', 'sending')",
        channel,
        error,
    )
    return int(result.split()[-1])


async def requeue_orphans(
    conn: Conn, channels: list[str], lease_s: float, max_attempts: int
) -> dict[str, tuple[int, int]]:
    """Deliveries left 'sending' longer than a send can take belong to a dead process: the
    channel may or may not have received that message, so they go back to the queue as possible
    repeats of it (its id joins ``uncertain_refs``); out of attempts, they fail. Returns
    (requeued, failed) per channel."""
    rows = await conn.fetch(
        """
        WITH orphaned AS (
            UPDATE deliveries
            SET state = CASE WHEN attempts >= $3 THEN 'failed' ELSE 'pending' END,
                next_attempt_at = now(),
                uncertain_refs = array_append(uncertain_refs, message_id),
                message_id = CASE WHEN attempts >= $3 THEN message_id END,
                last_error = 'the sending process stopped before the answer was recorded'
            WHERE state = 'sending' AND channel = ANY($1::text[])
              AND claimed_at < now() - make_interval(secs => $2)
            RETURNING channel, state)
        SELECT channel, count(*) FILTER (WHERE state = 'pending') AS requeued,
               count(*) FILTER (WHERE state = 'failed') AS failed
        FROM orphaned GROUP BY channel
        """,
        channels,
        lease_s,
        max_attempts,
    )
    return {r["channel"]: (int(r["requeued"]), int(r["failed"])) for r in rows}


async def disable_channel(conn: Conn, channel: str, url_fingerprint: str, reason: str) -> None:
    """Remember that the provider called this channel's URL invalid."""
    await conn.execute(
        """
        INSERT INTO channel_state (channel, url_fingerprint, reason) VALUES ($1, $2, $3)
        ON CONFLICT (channel) DO UPDATE
        SET url_fingerprint = EXCLUDED.url_fingerprint, reason = EXCLUDED.reason,
            disabled_at = now()
        """,
        channel,
        url_fingerprint,
        reason,
    )


async def disabled_channels(conn: Conn) -> dict[str, str]:
    """channel → fingerprint of the URL that was found invalid."""
    rows = await conn.fetch("SELECT channel, url_fingerprint FROM channel_state")
    return {r["channel"]: r["url_fingerprint"] for r in rows}


async def pending_counts(conn: Conn) -> dict[str, int]:
    """Undelivered deliveries per channel (for the pending gauge)."""
    rows = await conn.fetch(
        "SELECT channel, count(*) AS n FROM deliveries "
        "WHERE state IN ('pending', 'sending') GROUP BY channel"
    )
    return {r["channel"]: int(r["n"]) for r in rows}


async def deliveries(
    conn: Conn,
    *,
    event_id: str | None,
    channel: str | None,
    state: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The delivery log, newest first, filtered by any of event id, channel and state."""
    rows = await conn.fetch(
        """
        SELECT d.event_id, d.channel, d.state, d.attempts, d.digest, d.message_id,
               d.uncertain_refs, d.last_error, d.created_at, d.delivered_at, a.kind, a.model,
               a.severity, a.correlation_id
        FROM deliveries d JOIN alerts a USING (event_id)
        WHERE ($1::text IS NULL OR d.event_id = $1)
          AND ($2::text IS NULL OR d.channel = $2)
          AND ($3::text IS NULL OR d.state = $3)
        ORDER BY d.created_at DESC, d.event_id
        LIMIT $4
        """,
        event_id,
        channel,
        state,
        limit,
    )
    return [dict(r) for r in rows]
