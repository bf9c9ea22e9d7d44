"""SQL of the gatekeeper (asyncpg, inside the caller's transaction; search_path = its schema)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlcp.contracts import Evidence, ModelVersionRegistered
from mlcp.gatekeeper.domain import Dag, Decision, StageState
from mlcp.policy.platform import GateStage
from mlcp.runtime.db import Conn


@dataclass(frozen=True)
class Candidate:
    """A registered version: its DAG, the registration it is judged on, and the lifecycle it
    belongs to (correlation id and the trace context of its registration)."""

    dag: Dag
    registration: ModelVersionRegistered
    correlation_id: str | None
    traceparent: str | None = None


async def insert_candidate(
    conn: Conn,
    registration: ModelVersionRegistered,
    dag: Dag | None,
    *,
    correlation_id: str | None,
    traceparent: str | None = None,
    status: str | None = None,
    reason: str | None = None,
) -> bool:
    """Record a newly registered version; False when it was already known (a re-sent event)."""
    stages = [s.model_dump(mode="json", exclude_unset=True) for s in dag.stages] if dag else []
    inserted = await conn.fetchval(
        """INSERT INTO candidates (model, version, status, reason, registration, stages,
                                   correlation_id, traceparent)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8)
           ON CONFLICT (model, version) DO NOTHING RETURNING true""",
        registration.model,
        registration.version,
        status or (dag.status if dag else "ignored"),
        reason,
        registration.model_dump_json(),
        json.dumps(stages),
        correlation_id,
        traceparent,
    )
    return bool(inserted)


async def lock_candidate(conn: Conn, model: str, version: str) -> Candidate | None:
    """The candidate with its DAG, row-locked until the transaction ends (None if unknown or
    ignored)."""
    row = await conn.fetchrow(
        """SELECT status, reason, registration, stages, passed_order, correlation_id, traceparent
           FROM candidates WHERE model = $1 AND version = $2 FOR UPDATE""",
        model,
        version,
    )
    if row is None or row["status"] == "ignored":
        return None
    rows = await conn.fetch(
        """SELECT stage, status, started_at, deadline, finished_at, evidence, reason
           FROM stage_results WHERE model = $1 AND version = $2""",
        model,
        version,
    )
    states = {r["stage"]: _stage_state(r) for r in rows}
    # Rows written before trust moved to the model's artifact rules may carry a stage-level
    # 'trusted' list; the scan no longer reads it, so it is dropped rather than refused.
    stages = tuple(
        GateStage.model_validate({k: v for k, v in s.items() if k != "trusted"})
        for s in json.loads(row["stages"])
    )
    dag = Dag(
        model=model,
        version=version,
        stages=stages,
        state={s.name: states.get(s.name, StageState()) for s in stages},
        status=row["status"],
        passed_order=tuple(row["passed_order"]),
        reason=row["reason"],
    )
    registration = ModelVersionRegistered.model_validate_json(row["registration"])
    return Candidate(dag, registration, row["correlation_id"], row["traceparent"])


def _stage_state(row: Any) -> StageState:
    return StageState(
        status=row["status"],
        started_at=row["started_at"],
        deadline=row["deadline"],
        finished_at=row["finished_at"],
        evidence=tuple(Evidence.model_validate(e) for e in json.loads(row["evidence"])),
        reason=row["reason"],
    )


async def save(conn: Conn, dag: Dag) -> None:
    """Write the DAG's status and every stage's state."""
    await conn.execute(
        """UPDATE candidates SET status = $3, reason = $4, passed_order = $5, updated_at = now()
           WHERE model = $1 AND version = $2""",
        dag.model,
        dag.version,
        dag.status,
        dag.reason,
        list(dag.passed_order),
    )
    await conn.executemany(
        """INSERT INTO stage_results (model, version, stage, kind, status, started_at, deadline,
                                      finished_at, evidence, reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10)
           ON CONFLICT (model, version, stage) DO UPDATE SET
             status = excluded.status, started_at = excluded.started_at,
             deadline = excluded.deadline, finished_at = excluded.finished_at,
             evidence = excluded.evidence, reason = excluded.reason""",
        [
            (
                dag.model,
                dag.version,
                stage.name,
                stage.kind,
                st.status,
                st.started_at,
                st.deadline,
                st.finished_at,
                json.dumps([e.model_dump(mode="json") for e in st.evidence]),
                st.reason,
            )
            for stage in dag.stages
            for st in [dag.state[stage.name]]
        ],
    )


async def other_versions(conn: Conn, model: str, version: str) -> list[tuple[str, str]]:
    """(version, status) of the model's other candidates (lock a running one before changing
    it: ``lock_candidate``)."""
    rows = await conn.fetch(
        """SELECT version, status FROM candidates
           WHERE model = $1 AND version <> $2 AND status <> 'ignored'""",
        model,
        version,
    )
    return [(r["version"], r["status"]) for r in rows]


async def decisions_for(conn: Conn, model: str, version: str) -> dict[str, Decision]:
    """The decision of each stage: the first one recorded that was not ignored."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (stage) stage, kind, passed, actor, decided_at, detail
           FROM decisions
           WHERE model = $1 AND version = $2 AND disposition <> 'ignored'
           ORDER BY stage, id""",
        model,
        version,
    )
    return {
        r["stage"]: Decision(
            stage=r["stage"],
            kind=r["kind"],
            passed=r["passed"],
            actor=r["actor"],
            at=r["decided_at"],
            detail=r["detail"],
        )
        for r in rows
    }


async def record_decision(
    conn: Conn,
    *,
    event_id: str,
    event_type: str,
    model: str,
    version: str,
    decision: Decision,
    disposition: str,
    note: str,
) -> None:
    """Keep an incoming decision and what became of it (the audit of late/duplicate events)."""
    await conn.execute(
        """INSERT INTO decisions (event_id, event_type, model, version, stage, kind, passed,
                                  actor, decided_at, detail, disposition, note)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (event_id) DO NOTHING""",
        event_id,
        event_type,
        model,
        version,
        decision.stage,
        decision.kind,
        decision.passed,
        decision.actor,
        decision.at,
        decision.detail,
        disposition,
        note,
    )


async def overdue(conn: Conn, now: datetime, limit: int = 100) -> list[tuple[str, str, str | None]]:
    """(model, version, correlation id) of running candidates with a stage past its deadline."""
    rows = await conn.fetch(
        """SELECT DISTINCT s.model, s.version, c.correlation_id FROM stage_results s
           JOIN candidates c USING (model, version)
           WHERE s.status = 'waiting' AND s.deadline <= $1 AND c.status = 'running'
           LIMIT $2""",
        now,
        limit,
    )
    return [(r["model"], r["version"], r["correlation_id"]) for r in rows]


async def candidate_view(conn: Conn, model: str, version: str) -> dict[str, Any] | None:
    """A candidate's DAG state, stage results with evidence and decisions, for the HTTP API."""
    row = await conn.fetchrow(
        """SELECT status, reason, passed_order, registered_at, updated_at FROM candidates
           WHERE model = $1 AND version = $2""",
        model,
        version,
    )
    if row is None:
        return None
    stages = await conn.fetch(
        """SELECT stage, kind, status, started_at, deadline, finished_at, evidence, reason
           FROM stage_results WHERE model = $1 AND version = $2 ORDER BY started_at NULLS LAST""",
        model,
        version,
    )
    decisions = await conn.fetch(
        """SELECT event_type, stage, kind, passed, actor, decided_at, detail, disposition, note
           FROM decisions WHERE model = $1 AND version = $2 ORDER BY id""",
        model,
        version,
    )

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "model": model,
        "version": version,
        "status": row["status"],
        "reason": row["reason"],
        "passed_order": list(row["passed_order"]),
        "registered_at": iso(row["registered_at"]),
        "updated_at": iso(row["updated_at"]),
        "stages": [
            {
                "stage": s["stage"],
                "kind": s["kind"],
                "status": s["status"],
                "started_at": iso(s["started_at"]),
                "deadline": iso(s["deadline"]),
                "finished_at": iso(s["finished_at"]),
                "evidence": json.loads(s["evidence"]),
                "reason": s["reason"],
            }
            for s in stages
        ],
        "decisions": [{**dict(d), "decided_at": iso(d["decided_at"])} for d in decisions],
    }
