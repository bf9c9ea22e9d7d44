"""SQL of the retraining triggers and the requests they decided (asyncpg, inside the caller's
transaction). A model's ``model_triggers`` row is locked after its dataset's row
(``ledger_store.lock_dataset``), always in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mlcp.runtime.db import Conn
from mlcp.trainer.ledger import RequestRecord, TriggerState
from mlcp.trainer.runs import DecidedRequest


async def lock_trigger(conn: Conn, model: str, dataset: str) -> TriggerState:
    """Create the model's trigger state if new and lock it (after its dataset's row)."""
    row = await conn.fetchrow(
        """INSERT INTO model_triggers (model, dataset) VALUES ($1, $2)
           ON CONFLICT (model) DO UPDATE SET model = EXCLUDED.model
           RETURNING dataset, consumed_seq, consumed_rows, last_drift_request_at""",
        model,
        dataset,
    )
    assert row is not None
    return TriggerState(
        model,
        row["dataset"],
        int(row["consumed_seq"]),
        int(row["consumed_rows"]),
        row["last_drift_request_at"],
    )


async def record_requests(conn: Conn, records: Sequence[RequestRecord]) -> None:
    """Remember requests (in decision order) and move each model's counter to the ledger head
    its last one covers; one statement (the models' trigger rows must be locked)."""
    if not records:
        return
    last: dict[str, RequestRecord] = {}
    drift_at: dict[str, datetime] = {}
    for r in records:
        last[r.request.model] = r
        if r.request.reason == "drift":
            drift_at[r.request.model] = r.requested_at
    await conn.execute(
        """WITH recorded AS (
               INSERT INTO training_requests (request_id, model, reason, dataset, ledger_seq,
                                              rows_since_last_run, threshold, requested_by)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                    $5::bigint[], $6::bigint[], $7::bigint[], $8::text[])
               ON CONFLICT DO NOTHING)
           UPDATE model_triggers t
           SET consumed_seq = u.seq, consumed_rows = u.total_rows, last_request_id = u.request_id,
               last_requested_at = u.requested_at, dataset = u.dataset,
               last_drift_request_at = COALESCE(u.drift_at, t.last_drift_request_at)
           FROM unnest($9::text[], $10::bigint[], $11::bigint[], $12::text[],
                       $13::timestamptz[], $14::text[], $15::timestamptz[])
                AS u(model, seq, total_rows, request_id, requested_at, dataset, drift_at)
           WHERE t.model = u.model""",
        [r.request_id for r in records],
        [r.request.model for r in records],
        [r.request.reason for r in records],
        [r.dataset.dataset for r in records],
        [r.dataset.last_seq for r in records],
        [r.request.rows_since_last_run for r in records],
        [r.request.threshold for r in records],
        [r.request.requested_by for r in records],
        list(last),
        [r.dataset.last_seq for r in last.values()],
        [r.dataset.total_rows for r in last.values()],
        [r.request_id for r in last.values()],
        [r.requested_at for r in last.values()],
        [r.dataset.dataset for r in last.values()],
        [drift_at.get(model) for model in last],
    )


async def count_suppressed_drift(conn: Conn, model: str) -> None:
    """Count a DriftDetected absorbed by the cool-down."""
    await conn.execute(
        "UPDATE model_triggers SET drift_suppressed = drift_suppressed + 1 WHERE model = $1", model
    )


async def decided_requests(conn: Conn, request_ids: Sequence[str]) -> dict[str, DecidedRequest]:
    """Of these requests, those this trainer decided: the ledger position each covers and the
    ``traceparent`` its TrainingRequested was emitted with (kept in the outbox row)."""
    rows = await conn.fetch(
        """SELECT r.request_id, r.ledger_seq, o.headers->>'traceparent' AS traceparent
           FROM training_requests r LEFT JOIN mlcp_outbox o ON o.event_id = r.request_id
           WHERE r.request_id = ANY($1::text[])""",
        list(request_ids),
    )
    return {r["request_id"]: DecidedRequest(int(r["ledger_seq"]), r["traceparent"]) for r in rows}
