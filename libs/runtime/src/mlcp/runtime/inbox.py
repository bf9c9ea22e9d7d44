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
