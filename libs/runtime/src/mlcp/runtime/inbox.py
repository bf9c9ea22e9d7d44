"""Inbox: remember which events a consumer has applied, in the same transaction as the change."""

from __future__ import annotations

from mlcp.runtime.db import Conn


async def claim(conn: Conn, consumer: str, event_id: str, event_type: str) -> bool:
    """Record ``(consumer, event_id)``; False when it was already applied (a redelivery).

    Must run inside the handler's transaction, so that the mark and the state change commit or
    roll back together. Keyed on the CloudEvents ``id``, not FastStream's message id, which
    changes when the same event is published again.
    """
    inserted = await conn.fetchval(
        """INSERT INTO mlcp_inbox (consumer, event_id, event_type) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING true""",
        consumer,
        event_id,
        event_type,
    )
    return bool(inserted)


# The batch inbox's key: a 128-bit digest of (consumer, event id), computed by PostgreSQL.
_BATCH_KEY = (
    "encode(substring(sha256(convert_to($1 || chr(10) || id, 'UTF8')) for 16), 'hex')::uuid"
)


async def claim_many(conn: Conn, consumer: str, event_ids: list[str]) -> set[str]:
    """Record many event ids at once (batch consumers); returns those not applied before.

    One round trip into ``mlcp_batch_inbox``, in key order (adjacent index pages one after the
    other). The new ids come back as one array (not a row each): in the usual case every id of
    a batch is new, and thousands of result rows would cost more than the insert. (No event
    type column: a batch consumer's name already says it.)
    """
    fresh = await conn.fetchval(
        f"""WITH new AS (
               INSERT INTO mlcp_batch_inbox (key, consumer, event_id)
               SELECT key, $1, id
               FROM (SELECT {_BATCH_KEY} AS key, id FROM unnest($2::text[]) AS id ORDER BY 1) s
               ON CONFLICT DO NOTHING RETURNING event_id)
           SELECT coalesce(array_agg(event_id), '{{}}') FROM new""",
        consumer,
        event_ids,
    )
    return set(fresh)


async def release_many(conn: Conn, consumer: str, event_ids: list[str]) -> None:
    """Forget ids claimed in this transaction for events that were not applied after all."""
    await conn.execute(
        f"""DELETE FROM mlcp_batch_inbox
            WHERE key IN (SELECT {_BATCH_KEY} FROM unnest($2::text[]) AS id)""",
        consumer,
        event_ids,
    )
