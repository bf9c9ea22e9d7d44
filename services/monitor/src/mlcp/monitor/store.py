"""SQL of the monitor (asyncpg), always on the handler's connection inside its transaction.

State lives in PostgreSQL, not in memory: the open drift window's rows (as encoded chunks), the
running counts, the watches and every decision. A restart therefore resumes mid-window exactly,
and a decision keyed by (model, version, window id, kind) is recorded — and emitted — once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from mlcp.monitor.domain import Lifecycle, OpenWindow, TrafficStats, traffic_stats_of
from mlcp.policy.target import Target
from mlcp.runtime.db import Conn

# --- versions and aliases ------------------------------------------------------------------------


async def add_version(
    conn: Conn,
    model: str,
    version: str,
    profile: dict[str, Any],
    metrics: dict[str, float],
    registered_at: datetime,
    lifecycle: Lifecycle,
) -> bool:
    """Record a version's reference profile and lifecycle; False if it was already known
    (a re-sent event: the first registration's facts stay)."""
    inserted = await conn.fetchval(
        """INSERT INTO versions (model, version, reference_profile, metrics, registered_at,
                                 correlation_id, traceparent)
           VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6, $7)
           ON CONFLICT DO NOTHING RETURNING true""",
        model,
        version,
        json.dumps(profile),
        json.dumps(metrics),
        registered_at,
        lifecycle.correlation_id,
        lifecycle.traceparent,
    )
    return bool(inserted)


@dataclass(frozen=True)
class VersionInfo:
    """What the monitor keeps of a registered version."""

    reference_profile: dict[str, Any]
    metrics: dict[str, float]
    lifecycle: Lifecycle


async def version_info(conn: Conn, model: str, version: str) -> VersionInfo | None:
    """The profile, offline metrics and lifecycle of a registered version, or None."""
    row = await conn.fetchrow(
        """SELECT reference_profile, metrics, correlation_id, traceparent FROM versions
           WHERE model = $1 AND version = $2""",
        model,
        version,
    )
    if row is None:
        return None
    return VersionInfo(
        json.loads(row["reference_profile"]),
        json.loads(row["metrics"]),
        Lifecycle(row["correlation_id"], row["traceparent"]),
    )


async def set_alias(conn: Conn, model: str, alias: str, version: str, since: datetime) -> None:
    """Point ``alias`` at ``version``."""
    await conn.execute(
        """INSERT INTO aliases (model, alias, version, since) VALUES ($1, $2, $3, $4)
           ON CONFLICT (model, alias) DO UPDATE SET version = $3, since = $4""",
        model,
        alias,
        version,
        since,
    )


async def drop_alias(conn: Conn, model: str, alias: str, version: str) -> None:
    """Remove ``alias`` if it still points at ``version``."""
    await conn.execute(
        "DELETE FROM aliases WHERE model = $1 AND alias = $2 AND version = $3",
        model,
        alias,
        version,
    )


async def alias_version(conn: Conn, model: str, alias: str) -> str | None:
    """The version behind ``alias``, if any."""
    value = await conn.fetchval(
        "SELECT version FROM aliases WHERE model = $1 AND alias = $2", model, alias
    )
    return None if value is None else str(value)


async def aliases_of(conn: Conn, model: str, version: str) -> list[str]:
    """The aliases pointing at ``version`` (production first)."""
    rows = await conn.fetch(
        """SELECT alias FROM aliases WHERE model = $1 AND version = $2
           ORDER BY alias = 'production' DESC, alias""",
        model,
        version,
    )
    return [str(r["alias"]) for r in rows]


# --- traffic and drift windows -------------------------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    """A version's prediction count and open drift window."""

    served: int
    window: OpenWindow


async def lock_traffic(conn: Conn, model: str, version: str) -> Traffic:
    """The version's traffic row, locked until the transaction ends (created if new)."""
    await conn.execute(
        "INSERT INTO traffic (model, version) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        model,
        version,
    )
    row = await conn.fetchrow(
        """SELECT served, window_seq, window_size, window_started, window_ended FROM traffic
           WHERE model = $1 AND version = $2 FOR UPDATE""",
        model,
        version,
    )
    assert row is not None
    return Traffic(
        served=int(row["served"]),
        window=OpenWindow(
            seq=int(row["window_seq"]),
            size=int(row["window_size"]),
            started_at=row["window_started"],
            ended_at=row["window_ended"],
        ),
    )


async def served(conn: Conn, model: str, version: str) -> int:
    """Predictions of a version ingested so far."""
    value = await conn.fetchval(
        "SELECT served FROM traffic WHERE model = $1 AND version = $2", model, version
    )
    return int(value or 0)


async def save_traffic(conn: Conn, model: str, version: str, traffic: Traffic) -> None:
    """Store the new count and open window."""
    w = traffic.window
    await conn.execute(
        """UPDATE traffic SET served = $3, window_seq = $4, window_size = $5,
           window_started = $6, window_ended = $7 WHERE model = $1 AND version = $2""",
        model,
        version,
        traffic.served,
        w.seq,
        w.size,
        w.started_at,
        w.ended_at,
    )


async def add_chunk(
    conn: Conn, model: str, version: str, seq: int, rows: int, numeric: bytes, categorical: bytes
) -> None:
    """Append rows to an open window."""
    await conn.execute(
        """INSERT INTO window_chunks (model, version, window_seq, rows, numeric, categorical)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        model,
        version,
        seq,
        rows,
        numeric,
        categorical,
    )


async def take_chunks(
    conn: Conn, model: str, version: str, seq: int
) -> list[tuple[int, bytes, bytes]]:
    """Remove and return a closing window's chunks, in arrival order."""
    rows = await conn.fetch(
        """DELETE FROM window_chunks WHERE model = $1 AND version = $2 AND window_seq = $3
           RETURNING id, rows, numeric, categorical""",
        model,
        version,
        seq,
    )
    return [
        (r["rows"], r["numeric"], r["categorical"]) for r in sorted(rows, key=lambda r: r["id"])
    ]


# --- watches -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Watch:
    """A canary bake or a production rollback window."""

    id: int
    model: str
    version: str
    alias: str
    baseline_version: str | None
    started_at: datetime
    until: datetime | None
    served_from: int
    baseline_from: int | None
    next_window: int


async def open_watches(conn: Conn, model: str) -> list[Watch]:
    """The model's open watches, locked."""
    rows = await conn.fetch(
        """SELECT id, model, version, alias, baseline_version, started_at, until, served_from,
                  baseline_from, next_window
           FROM watches WHERE model = $1 AND ended_at IS NULL ORDER BY id FOR UPDATE""",
        model,
    )
    return [Watch(**dict(r)) for r in rows]


async def start_watch(
    conn: Conn,
    *,
    model: str,
    version: str,
    alias: str,
    baseline_version: str | None,
    started_at: datetime,
    until: datetime | None,
    served_from: int,
    baseline_from: int | None,
) -> int:
    """Open a watch (the caller has ended any open watch of the same alias)."""
    return int(
        await conn.fetchval(
            """INSERT INTO watches (model, version, alias, baseline_version, started_at, until,
                                    served_from, baseline_from)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id""",
            model,
            version,
            alias,
            baseline_version,
            started_at,
            until,
            served_from,
            baseline_from,
        )
    )


async def end_watches(
    conn: Conn, model: str, alias: str, outcome: str, at: datetime, version: str | None = None
) -> None:
    """Close the open watch of ``alias`` (only if it watches ``version``, when given)."""
    await conn.execute(
        """UPDATE watches SET ended_at = $4, outcome = $3
           WHERE model = $1 AND alias = $2 AND ended_at IS NULL
             AND ($5::text IS NULL OR version = $5)""",
        model,
        alias,
        outcome,
        at,
        version,
    )


async def end_watch(conn: Conn, watch_id: int, outcome: str, at: datetime) -> None:
    """Close one watch."""
    await conn.execute(
        "UPDATE watches SET ended_at = $3, outcome = $2 WHERE id = $1", watch_id, outcome, at
    )


async def advance_watch(conn: Conn, watch_id: int, next_window: int) -> None:
    """Remember which production watch window is judged next."""
    await conn.execute("UPDATE watches SET next_window = $2 WHERE id = $1", watch_id, next_window)


async def prune_predictions(conn: Conn, model: str) -> None:
    """Forget predictions no open watch needs any more."""
    await conn.execute(
        """DELETE FROM predictions p WHERE p.model = $1 AND NOT EXISTS (
               SELECT 1 FROM watches w WHERE w.model = $1 AND w.ended_at IS NULL
               AND p.version IN (w.version, w.baseline_version))""",
        model,
    )


# --- predictions, feedback and their statistics ---------------------------------------------------


async def add_predictions(
    conn: Conn,
    model: str,
    version: str,
    first_n: int,
    request_ids: list[str],
    ts: list[datetime],
    latency_ms: np.ndarray[Any, Any],
    error: np.ndarray[Any, Any],
    prediction: list[str | None],
) -> int:
    """Store predictions numbered ``first_n``…; a request id seen before is ignored."""
    count = len(request_ids)
    status: str = await conn.execute(
        """INSERT INTO predictions (model, request_id, version, n, ts, latency_ms, error,
                                    prediction)
           SELECT $1, r, $2, n, t, l, e, p
           FROM unnest($3::text[], $4::bigint[], $5::timestamptz[], $6::float8[], $7::bool[],
                       $8::text[]) AS u(r, n, t, l, e, p)
           ON CONFLICT DO NOTHING""",
        model,
        version,
        request_ids,
        list(range(first_n, first_n + count)),
        ts,
        latency_ms.tolist(),
        error.tolist(),
        prediction,
    )
    return int(status.rsplit(" ", 1)[-1])


async def add_feedback(
    conn: Conn, model: str, request_ids: list[str], labels: list[str], ts: list[datetime]
) -> int:
    """Store true labels; the first label of a request wins (a re-sent one is ignored)."""
    status: str = await conn.execute(
        """INSERT INTO feedback (model, request_id, label, ts)
           SELECT $1, r, l, t FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS u(r, l, t)
           ON CONFLICT DO NOTHING""",
        model,
        request_ids,
        labels,
        ts,
    )
    return int(status.rsplit(" ", 1)[-1])


async def traffic_stats(
    conn: Conn,
    model: str,
    version: str,
    target: Target,
    after_n: int,
    upto_n: int | None = None,
) -> TrafficStats:
    """Count, errors, p95 latency (linear interpolation, as numpy) and live accuracy (under the
    model's ``target``) of a version's stored predictions numbered ``after_n`` < n ≤ ``upto_n``."""
    row = await conn.fetchrow(
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


# --- decisions and issues ------------------------------------------------------------------------


async def record_decision(
    conn: Conn,
    model: str,
    version: str,
    window_id: str,
    kind: str,
    *,
    emitted: bool,
    payload: dict[str, Any],
) -> bool:
    """Record a decision once; False when it was taken before (then emit nothing)."""
    inserted = await conn.fetchval(
        """INSERT INTO decisions (model, version, window_id, kind, emitted, payload)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT DO NOTHING RETURNING true""",
        model,
        version,
        window_id,
        kind,
        emitted,
        json.dumps(payload),
    )
    return bool(inserted)


async def latest_drift_share(conn: Conn, model: str, version: str, since: datetime) -> float | None:
    """share_drifted of the version's latest drift window that ended at or after ``since``."""
    value = await conn.fetchval(
        """SELECT (payload->>'share_drifted')::float8 FROM decisions
           WHERE model = $1 AND version = $2 AND kind = 'drift'
             AND (payload->'window'->>'end')::timestamptz >= $3
           ORDER BY (payload->'window'->>'end')::timestamptz DESC LIMIT 1""",
        model,
        version,
        since,
    )
    return None if value is None else float(value)


async def add_issue(conn: Conn, model: str, version: str, reason: str, count: int) -> None:
    """Count bad input (unknown version, missing features, bad values)."""
    await conn.execute(
        """INSERT INTO ingest_issues (model, version, reason, count) VALUES ($1, $2, $3, $4)
           ON CONFLICT (model, version, reason)
           DO UPDATE SET count = ingest_issues.count + $4, last_seen = now()""",
        model,
        version,
        reason,
        count,
    )


async def model_status(conn: Conn, model: str) -> dict[str, Any]:
    """Everything the monitor knows about a model, for the HTTP API."""
    versions = await conn.fetch(
        """SELECT v.version, t.served, t.window_seq, t.window_size, t.window_started
           FROM versions v LEFT JOIN traffic t USING (model, version)
           WHERE v.model = $1 ORDER BY v.registered_at""",
        model,
    )
    aliases = await conn.fetch(
        "SELECT alias, version, since FROM aliases WHERE model = $1 ORDER BY alias", model
    )
    watches = await conn.fetch(
        """SELECT id, version, alias, baseline_version, started_at, until, ended_at, outcome
           FROM watches WHERE model = $1 ORDER BY id DESC LIMIT 20""",
        model,
    )
    decisions = await conn.fetch(
        """SELECT version, window_id, kind, emitted, decided_at, payload FROM decisions
           WHERE model = $1 ORDER BY decided_at DESC LIMIT 50""",
        model,
    )
    issues = await conn.fetch(
        """SELECT version, reason, count, last_seen FROM ingest_issues
           WHERE model = $1 ORDER BY version, reason""",
        model,
    )

    def plain(rows: list[Any]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            item = dict(row)
            for key, value in item.items():
                if isinstance(value, datetime):
                    item[key] = value.isoformat()
                elif key == "payload":
                    item[key] = json.loads(value)
            out.append(item)
        return out

    return {
        "model": model,
        "versions": plain(versions),
        "aliases": plain(aliases),
        "watches": plain(watches),
        "decisions": plain(decisions),
        "issues": plain(issues),
    }
