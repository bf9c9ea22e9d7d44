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


async def claim_many(conn: Conn, consumer: str, event_ids: list[str], event_type: str) -> set[str]:
    """Record many event ids at once; returns those not applied before (one round trip).

    The new ids come back as one array (not a row each): in the usual case every id of a
    batch is new, and thousands of result rows would cost more than the insert.
    """
    fresh = await conn.fetchval(
        """WITH new AS (
               INSERT INTO mlcp_inbox (consumer, event_id, event_type)
               SELECT $1, id, $3 FROM unnest($2::text[]) AS id
               ON CONFLICT DO NOTHING RETURNING event_id)
           SELECT coalesce(array_agg(event_id), '{}') FROM new""",
        consumer,
        event_ids,
        event_type,
    )
    return set(fresh)
