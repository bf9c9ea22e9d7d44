"""SQL of the trainer (asyncpg, inside the caller's transaction; search_path = the schema).

Lock order, everywhere: ``datasets`` row, then ``model_triggers`` row. Holding the dataset row
makes the ledger of one dataset strictly sequential, so two trainer instances (or a redelivery
racing the original) can never both count the same rows or both cross the same threshold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlcp.contracts import DataArrived, TrainingRequested
from mlcp.runtime.db import Conn


@dataclass(frozen=True)
class DatasetState:
    """A dataset's ledger head, read under its row lock."""

    dataset: str
    last_seq: int
    total_rows: int


@dataclass(frozen=True)
class TriggerState:
    """A model's trigger state, read under its row lock."""

    model: str
    dataset: str
    consumed_seq: int
    consumed_rows: int
    last_drift_request_at: datetime | None


@dataclass(frozen=True)
class LedgerBatch:
    """One accepted batch of the ledger."""

    seq: int
    batch_id: str
    uri: str
    rows: int
    sha256: str
    completeness: float
    format: str | None
    duplicates: int = 0
    """Announcements of the same content the ledger did not count again."""


@dataclass(frozen=True)
class ClaimedRun:
    """A run a worker now holds (``attempt`` is its fencing token)."""

    run_id: str
    request_id: str
    request_event: bytes
    model: str
    reason: str
    dataset: str
    ledger_seq: int
    attempt: int
    traceparent: str | None = None  # the request's trace context, which the run continues


@dataclass(frozen=True)
class StoredArtifact:
    """A registered version's artifact, as the trainer learnt it from the registry."""

    version: str
    uri: str
    sha256: str
    format: str


# --- ledger --------------------------------------------------------------------------------------


async def lock_dataset(conn: Conn, dataset: str) -> DatasetState:
    """Create the dataset's head if new and lock it for the rest of the transaction."""
    # One round trip: the no-op update takes the row lock and returns the committed head.
    row = await conn.fetchrow(
        """INSERT INTO datasets (dataset) VALUES ($1)
           ON CONFLICT (dataset) DO UPDATE SET dataset = EXCLUDED.dataset
           RETURNING last_seq, total_rows""",
        dataset,
    )
    assert row is not None
    return DatasetState(dataset, int(row["last_seq"]), int(row["total_rows"]))


@dataclass(frozen=True)
class KnownBatches:
    """What a dataset's ledger already holds of some announced batches."""

    by_id: dict[str, str]
    """batch_id → the sha256 it was accepted with."""
    by_content: dict[str, tuple[str, int]]
    """sha256 → (batch_id, seq) of the ledger batch holding that content (the first one)."""


async def known_batches(
    conn: Conn, dataset: str, batch_ids: list[str], sha256s: list[str]
) -> KnownBatches:
    """The ledger's batches of ``dataset`` with any of these ids or contents (one round trip)."""
    rows = await conn.fetch(
        """SELECT batch_id, sha256, seq FROM ledger
           WHERE dataset = $1 AND (batch_id = ANY($2::text[]) OR sha256 = ANY($3::text[]))
           ORDER BY seq""",
        dataset,
        batch_ids,
        sha256s,
    )
    known = KnownBatches({}, {})
    for r in rows:
        known.by_id[r["batch_id"]] = r["sha256"]
        known.by_content.setdefault(r["sha256"], (r["batch_id"], int(r["seq"])))
    return known


@dataclass(frozen=True)
class Duplicate:
    """An announcement of content the ledger already holds (batch ``of_batch_id``)."""

    event_id: str
    data: DataArrived
    of_batch_id: str
    of_seq: int


async def record_duplicates(conn: Conn, duplicates: list[Duplicate]) -> None:
    """Remember re-announced batches (one statement; a redelivered event is recorded once)."""
    if not duplicates:
        return
    await conn.execute(
        """INSERT INTO duplicate_batches (event_id, dataset, batch_id, uri, rows, sha256,
                                          of_batch_id, of_seq)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                                $6::text[], $7::text[], $8::bigint[])
           ON CONFLICT DO NOTHING""",
        [d.event_id for d in duplicates],
        [d.data.dataset for d in duplicates],
        [d.data.batch_id for d in duplicates],
        [d.data.uri for d in duplicates],
        [d.data.rows for d in duplicates],
        [d.data.sha256 for d in duplicates],
        [d.of_batch_id for d in duplicates],
        [d.of_seq for d in duplicates],
    )


@dataclass(frozen=True)
class LedgerEntry:
    """A batch accepted into the ledger at position ``seq`` (not yet written)."""

    event_id: str
    data: DataArrived
    seq: int
    cum_rows: int
    verified: bool


async def append_ledger(conn: Conn, head: DatasetState, entries: list[LedgerEntry]) -> None:
    """Write accepted batches and move the dataset's head to ``head``, in one statement (the
    dataset row must be locked by this transaction)."""
    if not entries:
        return
    await conn.execute(
        """WITH added AS (
               INSERT INTO ledger (dataset, seq, batch_id, event_id, uri, rows, cum_rows, sha256,
                                   completeness, format, verified)
               SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[],
                                        $6::bigint[], $7::bigint[], $8::text[], $9::float8[],
                                        $10::text[], $11::bool[]))
           UPDATE datasets SET last_seq = $12, total_rows = $13, updated_at = now()
           WHERE dataset = $1""",
        head.dataset,
        [e.seq for e in entries],
        [e.data.batch_id for e in entries],
        [e.event_id for e in entries],
        [e.data.uri for e in entries],
        [e.data.rows for e in entries],
        [e.cum_rows for e in entries],
        [e.data.sha256 for e in entries],
        [e.data.completeness for e in entries],
        [e.data.format for e in entries],
        [e.verified for e in entries],
        head.last_seq,
        head.total_rows,
    )


async def record_rejected(
    conn: Conn, data: DataArrived, *, event_id: str, actual: str | None, reason: str
) -> None:
    """Remember a refused batch (the ledger itself is not touched)."""
    await conn.execute(
        """INSERT INTO rejected_batches
               (event_id, dataset, batch_id, uri, sha256_declared, sha256_actual, reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
        event_id,
        data.dataset,
        data.batch_id,
        data.uri,
        data.sha256,
        actual,
        reason,
    )


async def batches_upto(conn: Conn, dataset: str, seq: int) -> list[LedgerBatch]:
    """Every accepted batch of ``dataset`` up to ledger position ``seq``, in ledger order, with
    how often its content was re-announced."""
    rows = await conn.fetch(
        """SELECT l.seq, l.batch_id, l.uri, l.rows, l.sha256, l.completeness, l.format,
                  (SELECT count(*) FROM duplicate_batches d
                   WHERE d.dataset = l.dataset AND d.of_seq = l.seq) AS duplicates
           FROM ledger l WHERE l.dataset = $1 AND l.seq <= $2 ORDER BY l.seq""",
        dataset,
        seq,
    )
    return [
        LedgerBatch(
            int(r["seq"]),
            r["batch_id"],
            r["uri"],
            int(r["rows"]),
            r["sha256"],
            float(r["completeness"]),
            r["format"],
            int(r["duplicates"]),
        )
        for r in rows
    ]


async def event_ids_after(conn: Conn, dataset: str, seq: int, limit: int) -> list[str]:
    """CloudEvents ids of the batches after ledger position ``seq`` (the most recent ``limit``)."""
    rows = await conn.fetch(
        """SELECT event_id FROM (SELECT event_id, seq FROM ledger WHERE dataset = $1 AND seq > $2
                                 ORDER BY seq DESC LIMIT $3) recent ORDER BY seq""",
        dataset,
        seq,
        limit,
    )
    return [r["event_id"] for r in rows]


# --- triggers ------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class RequestRecord:
    """A request this trainer decided, covering its dataset's ledger up to ``dataset``."""

    request_id: str
    request: TrainingRequested
    dataset: DatasetState
    requested_at: datetime


async def record_request(
    conn: Conn,
    *,
    request_id: str,
    request: TrainingRequested,
    dataset: DatasetState,
    requested_at: datetime,
) -> None:
    """Remember a request and move the model's counter to the ledger head it covers."""
    await record_requests(conn, [RequestRecord(request_id, request, dataset, requested_at)])


async def record_requests(conn: Conn, records: list[RequestRecord]) -> None:
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


async def decided_requests(conn: Conn, request_ids: list[str]) -> dict[str, tuple[int, str | None]]:
    """Of these requests, those this trainer decided: the ledger position each covers and the
    ``traceparent`` its TrainingRequested was emitted with (kept in the outbox row)."""
    rows = await conn.fetch(
        """SELECT r.request_id, r.ledger_seq, o.headers->>'traceparent' AS traceparent
           FROM training_requests r LEFT JOIN mlcp_outbox o ON o.event_id = r.request_id
           WHERE r.request_id = ANY($1::text[])""",
        request_ids,
    )
    return {r["request_id"]: (int(r["ledger_seq"]), r["traceparent"]) for r in rows}


# --- runs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuedRun:
    """The run of one request, to be queued (``traceparent``: the request's trace context)."""

    run_id: str
    request_id: str
    request_event: bytes
    request: TrainingRequested
    dataset: str
    ledger_seq: int
    traceparent: str | None = None


async def insert_runs(conn: Conn, runs: list[QueuedRun]) -> int:
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


async def finish_run(conn: Conn, run_id: str, attempt: int, record: dict[str, Any]) -> bool:
    """Record a held run's results (tracking tables included); False when fenced off."""
    closed = await _close_run(
        conn,
        run_id,
        attempt,
        "finished",
        duration_s=record["duration_s"],
        entrypoint=record["entrypoint"],
        seed=record["seed"],
        code_version=record["code_version"],
        environment=json.dumps(record["environment"]),
        feature_schema=json.dumps(record["feature_schema"]),
        label=record["label"],
        baseline=json.dumps(record["baseline"]),
        reference_profile=json.dumps(record["reference_profile"]),
        target=json.dumps(record["target"]),
    )
    if not closed:
        return False
    await conn.executemany(
        "INSERT INTO run_params (run_id, name, value) VALUES ($1, $2, $3::jsonb)",
        [(run_id, k, json.dumps(v)) for k, v in record["params"].items()],
    )
    metrics = [(run_id, "candidate", k, v) for k, v in record["metrics"].items()]
    if record["baseline"] is not None:
        metrics += [(run_id, "baseline", k, v) for k, v in record["baseline"]["metrics"].items()]
    await conn.executemany(
        "INSERT INTO run_metrics (run_id, scope, name, value) VALUES ($1, $2, $3, $4)", metrics
    )
    artifact = record["artifact"]
    await conn.execute(
        """INSERT INTO run_artifacts (run_id, uri, sha256, format, size_bytes)
           VALUES ($1, $2, $3, $4, $5)""",
        run_id,
        artifact["uri"],
        artifact["sha256"],
        artifact["format"],
        artifact["size_bytes"],
    )
    await conn.executemany(
        """INSERT INTO run_batches (run_id, position, dataset, batch_id, sha256, rows)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        [
            (run_id, i, b["dataset"], b["batch_id"], b["sha256"], b["rows"])
            for i, b in enumerate(record["batches"])
        ],
    )
    return True


async def run_status(conn: Conn, run_id: str) -> str | None:
    """A run's status (None: no such run)."""
    value = await conn.fetchval("SELECT status FROM runs WHERE run_id = $1", run_id)
    return None if value is None else str(value)


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


# --- projection of the registry ------------------------------------------------------------------


async def record_version(
    conn: Conn, *, model: str, version: str, run_id: str, uri: str, sha256: str, fmt: str
) -> None:
    """Remember a registered version's artifact (to score it when it serves production)."""
    await conn.execute(
        """INSERT INTO model_versions
               (model, version, run_id, artifact_uri, artifact_sha256, artifact_format)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
        model,
        version,
        run_id,
        uri,
        sha256,
        fmt,
    )


async def production_version(conn: Conn, model: str) -> str | None:
    """The version the trainer believes serves ``model`` in production."""
    value = await conn.fetchval("SELECT version FROM production WHERE model = $1", model)
    return None if value is None else str(value)


async def set_production(conn: Conn, model: str, version: str | None, event_id: str) -> None:
    """Move the production projection of ``model``."""
    await conn.execute(
        """INSERT INTO production (model, version, event_id) VALUES ($1, $2, $3)
           ON CONFLICT (model) DO UPDATE
           SET version = EXCLUDED.version, event_id = EXCLUDED.event_id, updated_at = now()""",
        model,
        version,
        event_id,
    )


async def production_artifact(conn: Conn, model: str) -> StoredArtifact | None:
    """The production version's artifact, when both are known."""
    row = await conn.fetchrow(
        """SELECT v.version, v.artifact_uri, v.artifact_sha256, v.artifact_format
           FROM production p JOIN model_versions v ON v.model = p.model AND v.version = p.version
           WHERE p.model = $1""",
        model,
    )
    if row is None:
        return None
    return StoredArtifact(
        row["version"], row["artifact_uri"], row["artifact_sha256"], row["artifact_format"]
    )
