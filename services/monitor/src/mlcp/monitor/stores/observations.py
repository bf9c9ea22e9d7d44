"""Predictions of watched versions (``predictions``, numbered per version in arrival order) and
true labels (``feedback``), joined by request id for live accuracy."""

from __future__ import annotations

from mlcp.monitor.domain import TrafficStats, traffic_stats_of
from mlcp.monitor.ports import FeedbackRows, PredictionRows
from mlcp.policy.target import Target
from mlcp.runtime.db import Conn


def _inserted(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class PgObservations:
    """``ObservationStore`` in PostgreSQL."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def add_predictions(self, model: str, version: str, rows: PredictionRows) -> int:
        """Store predictions numbered ``rows.first_n``…; a request id seen before is ignored."""
        count = len(rows.request_ids)
        status: str = await self._conn.execute(
            """INSERT INTO predictions (model, request_id, version, n, ts, latency_ms, error,
                                        prediction)
               SELECT $1, r, $2, n, t, l, e, p
               FROM unnest($3::text[], $4::bigint[], $5::timestamptz[], $6::float8[],
                           $7::bool[], $8::text[]) AS u(r, n, t, l, e, p)
               ON CONFLICT DO NOTHING""",
            model,
            version,
            rows.request_ids,
            list(range(rows.first_n, rows.first_n + count)),
            rows.ts,
            rows.latency_ms.tolist(),
            rows.error.tolist(),
            rows.prediction,
        )
        return _inserted(status)

    async def add_feedback(self, model: str, rows: FeedbackRows) -> int:
        """Store true labels; the first label of a request wins (a re-sent one is ignored)."""
        status: str = await self._conn.execute(
            """INSERT INTO feedback (model, request_id, label, ts)
               SELECT $1, r, l, t
               FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS u(r, l, t)
               ON CONFLICT DO NOTHING""",
            model,
            rows.request_ids,
            rows.labels,
            rows.ts,
        )
        return _inserted(status)

    async def stats(
        self, model: str, version: str, target: Target, after_n: int, upto_n: int | None = None
    ) -> TrafficStats:
        """Count, errors, p95 latency (linear interpolation, as numpy) and live accuracy (under
        the model's ``target``) of a version's predictions numbered ``after_n`` < n ≤ ``upto_n``."""
        row = await self._conn.fetchrow(
            """SELECT count(*) AS count,
                      count(*) FILTER (WHERE p.error) AS errors,
                      percentile_cont(0.95) WITHIN GROUP (ORDER BY p.latency_ms) AS p95,
                      array_agg(p.prediction) FILTER (WHERE labelled) AS predictions,
                      array_agg(f.label) FILTER (WHERE labelled) AS labels
               FROM predictions p LEFT JOIN feedback f
                 ON f.model = p.model AND f.request_id = p.request_id,
               LATERAL (SELECT NOT p.error AND p.prediction IS NOT NULL AND f.label IS NOT NULL)
                 AS l(labelled)
               WHERE p.model = $1 AND p.version = $2 AND p.n > $3
                 AND ($4::bigint IS NULL OR p.n <= $4)""",
            model,
            version,
            after_n,
            upto_n,
        )
        assert row is not None
        return traffic_stats_of(
            target,
            count=int(row["count"]),
            errors=int(row["errors"]),
            latency_p95_ms=None if row["p95"] is None else float(row["p95"]),
            predictions=row["predictions"] or [],
            labels=row["labels"] or [],
        )

    async def prune(self, model: str) -> None:
        """Forget predictions no open watch needs any more."""
        await self._conn.execute(
            """DELETE FROM predictions p WHERE p.model = $1 AND NOT EXISTS (
                   SELECT 1 FROM watches w WHERE w.model = $1 AND w.ended_at IS NULL
                   AND p.version IN (w.version, w.baseline_version))""",
            model,
        )
