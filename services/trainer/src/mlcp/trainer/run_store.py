"""SQL of runs: the queue workers claim from, leases and attempts, and the tracking tables a
finished run fills (asyncpg; the caller holds the transaction where one is needed)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mlcp.runtime.db import Conn
from mlcp.trainer.runs import ClaimedRun, QueuedRun, RunResult


async def insert_runs(conn: Conn, runs: Sequence[QueuedRun]) -> int:
    """Queue runs in one statement; returns how many were new (a request has one run)."""
    if not runs:
        return 0
    status = await conn.execute(
        # created_at per row, in request order: workers claim the oldest queued run first.
        """INSERT INTO runs (run_id, request_id, request_event, model, reason, dataset, ledger_seq,
                             traceparent, created_at)
           SELECT r.run_id, r.request_id, r.request_event, r.model, r.reason, r.dataset,
                  r.ledger_seq, r.traceparent, clock_timestamp()
           FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::text[],
                       $7::bigint[], $8::text[]) WITH ORDINALITY
                AS r(run_id, request_id, request_event, model, reason, dataset, ledger_seq,
                     traceparent, ord)
           ORDER BY r.ord
           ON CONFLICT DO NOTHING""",
        [r.run_id for r in runs],
        [r.request_id for r in runs],
        [r.request_event for r in runs],
        [r.request.model for r in runs],
        [r.request.reason for r in runs],
        [r.dataset for r in runs],
        [r.ledger_seq for r in runs],
        [r.traceparent for r in runs],
    )
    return int(status.split()[-1])


async def claim_run(conn: Conn, *, worker: str, lease_s: float) -> ClaimedRun | None:
    """Take the oldest queued run, or a running one whose worker's lease expired."""
    row = await conn.fetchrow(
        """UPDATE runs SET status = 'running', attempt = attempt + 1, worker = $1,
                           lease_until = now() + make_interval(secs => $2),
                           started_at = coalesce(started_at, now())
           WHERE run_id = (
               SELECT run_id FROM runs
               WHERE status = 'queued' OR (status = 'running' AND lease_until < now())
               ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING run_id, request_id, request_event, model, reason, dataset, ledger_seq,
                     attempt, traceparent""",
        worker,
        lease_s,
    )
    if row is None:
        return None
    run = ClaimedRun(
        row["run_id"],
        row["request_id"],
        bytes(row["request_event"]),
        row["model"],
        row["reason"],
        row["dataset"],
        int(row["ledger_seq"]),
        int(row["attempt"]),
        row["traceparent"],
    )
    if run.attempt > 1:
        await conn.execute(
            """UPDATE run_attempts SET ended_at = now(), outcome = 'lost'
               WHERE run_id = $1 AND attempt < $2 AND ended_at IS NULL""",
            run.run_id,
            run.attempt,
        )
    await conn.execute(
        "INSERT INTO run_attempts (run_id, attempt, worker) VALUES ($1, $2, $3)",
        run.run_id,
        run.attempt,
        worker,
    )
    return run


async def extend_lease(conn: Conn, run_id: str, attempt: int, lease_s: float) -> bool:
    """Keep holding a run; False when another worker took it over (our lease had expired)."""
    status = await conn.execute(
        """UPDATE runs SET lease_until = now() + make_interval(secs => $3)
           WHERE run_id = $1 AND attempt = $2 AND status = 'running'""",
        run_id,
        attempt,
        lease_s,
    )
    return bool(status == "UPDATE 1")


async def release_run(conn: Conn, run_id: str, attempt: int) -> None:
    """Hand a held run back at once (graceful stop): the next worker need not wait for the lease."""
    status = await conn.execute(
        """UPDATE runs SET lease_until = now() - interval '1 second'
           WHERE run_id = $1 AND attempt = $2 AND status = 'running'""",
        run_id,
        attempt,
    )
    if status == "UPDATE 1":
        await conn.execute(
            """UPDATE run_attempts SET ended_at = now(), outcome = 'interrupted'
               WHERE run_id = $1 AND attempt = $2""",
            run_id,
            attempt,
        )


async def _close_run(conn: Conn, run_id: str, attempt: int, status: str, **cols: Any) -> bool:
    names = list(cols)
    sets = ", ".join(f"{name} = ${i + 4}" for i, name in enumerate(names))
    result = await conn.execute(
        f"""UPDATE runs SET status = $3, finished_at = now(), lease_until = NULL
                            {", " + sets if sets else ""}
            WHERE run_id = $1 AND attempt = $2 AND status = 'running'""",
        run_id,
        attempt,
        status,
        *cols.values(),
    )
    if result != "UPDATE 1":
        return False
    await conn.execute(
        "UPDATE run_attempts SET ended_at = now(), outcome = $3 WHERE run_id = $1 AND attempt = $2",
        run_id,
        attempt,
        status,
    )
    return True


async def fail_run(
    conn: Conn,
    run_id: str,
    attempt: int,
    *,
    stage: str,
    error: str,
    error_type: str | None,
    duration_s: float | None = None,
) -> bool:
    """Mark a held run failed; False when this worker no longer holds it (fenced)."""
    return await _close_run(
        conn,
        run_id,
        attempt,
        "failed",
        failed_stage=stage,
        error=error,
        error_type=error_type,
        duration_s=duration_s,
    )


async def finish_run(conn: Conn, run_id: str, attempt: int, result: RunResult) -> bool:
    """Record a held run's results (tracking tables included); False when fenced off."""
    closed = await _close_run(
        conn,
        run_id,
        attempt,
        "finished",
        duration_s=result.duration_s,
        entrypoint=result.entrypoint,
        seed=result.seed,
        code_version=result.code_version,
        environment=json.dumps(result.environment),
        feature_schema=json.dumps(result.feature_schema),
        label=result.label,
        baseline=json.dumps(result.baseline),
        reference_profile=json.dumps(result.reference_profile),
        target=json.dumps(result.target),
    )
    if not closed:
        return False
    await conn.executemany(
        "INSERT INTO run_params (run_id, name, value) VALUES ($1, $2, $3::jsonb)",
        [(run_id, k, json.dumps(v)) for k, v in result.params.items()],
    )
    metrics = [(run_id, "candidate", k, v) for k, v in result.metrics.items()]
    if result.baseline is not None:
        metrics += [(run_id, "baseline", k, v) for k, v in result.baseline["metrics"].items()]
    await conn.executemany(
        "INSERT INTO run_metrics (run_id, scope, name, value) VALUES ($1, $2, $3, $4)", metrics
    )
    artifact = result.artifact
    await conn.execute(
        """INSERT INTO run_artifacts (run_id, uri, sha256, format, size_bytes)
           VALUES ($1, $2, $3, $4, $5)""",
        run_id,
        artifact.uri,
        artifact.sha256,
        artifact.format,
        artifact.size_bytes,
    )
    await conn.executemany(
        """INSERT INTO run_batches (run_id, position, dataset, batch_id, sha256, rows)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        [
            (run_id, i, b.dataset, b.batch_id, b.sha256, b.rows)
            for i, b in enumerate(result.batches)
        ],
    )
    return True


async def run_lineage(conn: Conn, run_id: str) -> dict[str, Any] | None:
    """Everything recorded about a run: request, data, params, metrics, artifact, environment."""
    run = await conn.fetchrow(
        """SELECT r.run_id, r.request_id, r.model, r.reason, r.dataset, r.ledger_seq, r.status,
                  r.attempt, r.created_at, r.started_at, r.finished_at, r.duration_s,
                  r.entrypoint, r.seed, r.code_version, r.environment, r.feature_schema, r.label,
                  r.target, r.baseline, r.failed_stage, r.error, r.error_type
           FROM runs r WHERE r.run_id = $1""",
        run_id,
    )
    if run is None:
        return None
    out: dict[str, Any] = dict(run)
    for key in ("environment", "feature_schema", "baseline", "target"):
        if out[key] is not None:
            out[key] = json.loads(out[key])
    out["params"] = {
        r["name"]: json.loads(r["value"])
        for r in await conn.fetch("SELECT name, value FROM run_params WHERE run_id = $1", run_id)
    }
    out["metrics"] = {
        r["name"]: r["value"]
        for r in await conn.fetch(
            "SELECT name, value FROM run_metrics WHERE run_id = $1 AND scope = 'candidate'",
            run_id,
        )
    }
    out["batches"] = [
        {**dict(r), "duplicates": json.loads(r["duplicates"])}
        for r in await conn.fetch(
            """SELECT b.dataset, b.batch_id, b.sha256, b.rows, l.uri, l.format, l.completeness,
                      (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                 'event_id', d.event_id, 'batch_id', d.batch_id, 'uri', d.uri,
                                 'arrived_at', d.arrived_at) ORDER BY d.arrived_at), '[]')
                       FROM duplicate_batches d
                       WHERE d.dataset = l.dataset AND d.of_seq = l.seq) AS duplicates
               FROM run_batches b LEFT JOIN ledger l
                    ON l.dataset = b.dataset AND l.batch_id = b.batch_id
               WHERE b.run_id = $1 ORDER BY b.position""",
            run_id,
        )
    ]
    artifact = await conn.fetchrow(
        "SELECT uri, sha256, format, size_bytes FROM run_artifacts WHERE run_id = $1", run_id
    )
    out["artifact"] = None if artifact is None else dict(artifact)
    out["attempts"] = [
        dict(r)
        for r in await conn.fetch(
            """SELECT attempt, worker, started_at, ended_at, outcome FROM run_attempts
               WHERE run_id = $1 ORDER BY attempt""",
            run_id,
        )
    ]
    return out
