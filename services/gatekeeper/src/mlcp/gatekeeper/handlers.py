"""Thin subscribers: event → domain → store + tx.emit, inside the runtime's inbox transaction.

The gatekeeper drives each candidate's DAG in the transaction of the event that moved it: when
a stage passes, the stages it unblocks start (and automatic ones are decided) right there, so
it does not consume its own CheckPassed events. The deadline sweep (``sweep_once``) is the
only work started outside a handler; it locks the same candidate row, so the two never race.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import semver
from prometheus_client import CollectorRegistry, Counter, Histogram

from mlcp.artifacts import ArtifactLimits, ArtifactPolicy, FileStore
from mlcp.contracts import (
    ApprovalGranted,
    ApprovalRejected,
    CheckPassed,
    CloudEvent,
    EventData,
    ExternalCheckReported,
    GateFailed,
    GatePassed,
    ModelVersionRegistered,
    utcnow,
)
from mlcp.gatekeeper import domain, store
from mlcp.gatekeeper.domain import Decision, ScanReport
from mlcp.gatekeeper.scan import scan
from mlcp.policy.platform import PlatformConfig
from mlcp.runtime import ServiceRuntime, Tx
from mlcp.runtime.loops import run_every
from mlcp.runtime.telemetry import current_traceparent, resume_trace

log = logging.getLogger(__name__)


class GateMetrics:
    """Domain metrics. Counted when decided: a transaction retried after a database error may
    count a decision twice (the events themselves are exactly-once in effect)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()
        self.stage_results = Counter(
            "mlcp_gatekeeper_stage_results_total",
            "Stage decisions, by kind and outcome (passed, failed).",
            ["kind", "outcome"],
            registry=registry,
        )
        self.outcomes = Counter(
            "mlcp_gatekeeper_gate_outcomes_total",
            "Candidates whose DAG ended, by outcome (passed, failed, superseded).",
            ["outcome"],
            registry=registry,
        )
        self.scan_seconds = Histogram(
            "mlcp_gatekeeper_scan_duration_seconds",
            "Time to re-hash and scan one artifact.",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )

    def count(self, events: list[EventData]) -> None:
        """Count the decisions among ``events``."""
        for event in events:
            if isinstance(event, CheckPassed):
                self.stage_results.labels(event.kind, "passed").inc()
            elif isinstance(event, GateFailed):
                self.stage_results.labels(event.kind, "failed").inc()
                superseded = event.reason.startswith("superseded by")
                self.outcomes.labels("superseded" if superseded else "failed").inc()
            elif isinstance(event, GatePassed):
                self.outcomes.labels("passed").inc()


class Handlers:
    """The gatekeeper's event handlers, bound to the platform config and the artifact root."""

    def __init__(
        self,
        config: PlatformConfig,
        artifact_root: Path,
        metrics: GateMetrics | None = None,
        limits: ArtifactLimits | None = None,
    ) -> None:
        self.config = config
        self.artifacts = FileStore(artifact_root)
        self.limits = limits or ArtifactLimits()
        self.metrics = metrics or GateMetrics()

    # -- registration -----------------------------------------------------------------------------
    async def on_registered(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Start the candidate's DAG; supersede older pending candidates of the model."""
        reg: ModelVersionRegistered = event.data
        conn, now = tx.conn, utcnow()
        correlation = event.correlationid or event.id
        traceparent = current_traceparent()
        model = self.config.models.get(reg.model)
        if model is None or not model.gates:
            reason = (
                f"model {reg.model!r} is not configured in MLCP_CONFIG"
                if model is None
                else f"model {reg.model!r} has no gates: it is never promoted automatically"
            )
            if await store.insert_candidate(
                conn, reg, None, correlation_id=correlation, reason=reason
            ):
                log.warning("%s %s ignored: %s", reg.model, reg.version, reason)
            return
        dag = domain.start(reg.model, reg.version, model.gates)
        if not await store.insert_candidate(
            conn, reg, dag, correlation_id=correlation, traceparent=traceparent
        ):
            log.info("%s %s already registered; nothing to do", reg.model, reg.version)
            return
        others = await store.other_versions(conn, reg.model, reg.version)
        newer = [v for v, _ in others if domain.is_newer(v, reg.version)]
        if newer:
            # Arrived after a newer candidate of the same model: never started.
            step = domain.supersede(dag, max(newer, key=semver.Version.parse), now)
            await store.save(conn, step.dag)
            await _emit(tx, step.events, self.metrics)
            return
        for version, status in others:
            if status != "running":
                continue
            older = await store.lock_candidate(conn, reg.model, version)
            if older is not None and older.dag.status == "running":
                step = domain.supersede(older.dag, reg.version, now)
                await store.save(conn, step.dag)
                await _emit(tx, step.events, self.metrics, older)
        await self.drive(tx, store.Candidate(dag, reg, correlation, traceparent), now)

    # -- decisions of people and CI ---------------------------------------------------------------
    async def on_approval_granted(self, event: CloudEvent[Any], tx: Tx) -> None:
        """A person approved a manual stage."""
        data: ApprovalGranted = event.data
        decision = Decision(data.stage, "manual", True, data.approver, event.time, data.comment)
        await self._decide(event, tx, data.model, data.version, decision)

    async def on_approval_rejected(self, event: CloudEvent[Any], tx: Tx) -> None:
        """A person rejected a manual stage."""
        data: ApprovalRejected = event.data
        decision = Decision(data.stage, "manual", False, data.approver, event.time, data.comment)
        await self._decide(event, tx, data.model, data.version, decision)

    async def on_check_reported(self, event: CloudEvent[Any], tx: Tx) -> None:
        """CI reported an external check (named by the stage or by its ``check`` name)."""
        data: ExternalCheckReported = event.data
        detail = " ".join(x for x in (data.details, data.url) if x) or None
        passed = data.status == "passed"
        decision = Decision(data.check, "external", passed, data.reporter, event.time, detail)
        await self._decide(event, tx, data.model, data.version, decision)

    async def _decide(
        self, event: CloudEvent[Any], tx: Tx, model: str, version: str, decision: Decision
    ) -> None:
        conn, now = tx.conn, utcnow()
        candidate = await store.lock_candidate(conn, model, version)
        if decision.kind == "external":
            configured = self.config.models.get(model)
            stages = candidate.dag.stages if candidate else (configured.gates if configured else [])
            decision = replace(decision, stage=domain.external_stage_for(stages, decision.stage))
        stage = decision.stage
        earlier = (await store.decisions_for(conn, model, version)).get(stage)
        verdict, note = domain.disposition(candidate.dag if candidate else None, decision, earlier)
        await store.record_decision(
            conn,
            event_id=event.id,
            event_type=event.type,
            model=model,
            version=version,
            decision=decision,
            disposition=verdict,
            note=note,
        )
        log.info("%s for %s %s stage %s: %s (%s)", event.type, model, version, stage, verdict, note)
        if verdict == "accepted" and candidate is not None:
            await self.drive(tx, candidate, now)

    # -- the DAG ----------------------------------------------------------------------------------
    async def drive(self, tx: Tx, candidate: store.Candidate, now: datetime) -> None:
        """Advance the DAG as far as it goes now, scanning the artifact if a stage needs it."""
        decisions = await store.decisions_for(tx.conn, candidate.dag.model, candidate.dag.version)
        dag, scan = candidate.dag, None
        events: list[EventData] = []
        while True:
            step = domain.advance(dag, candidate.registration, decisions, now, scan)
            dag = step.dag
            events += step.events
            if not step.needs_scan or scan is not None:
                break
            scan = await self._scan(candidate, dag)
        await store.save(tx.conn, dag)
        await _emit(tx, events, self.metrics, candidate)

    async def _scan(self, candidate: store.Candidate, dag: domain.Dag) -> ScanReport:
        # The model's artifact rules as configured now (not when it registered): the loaders
        # read the current config too, and withdrawing trust must take effect at once.
        model = self.config.models.get(dag.model)
        policy = model.artifact.policy() if model is not None else ArtifactPolicy()
        # Hashing and scanning are blocking file work: keep the event loop free.
        with self.metrics.scan_seconds.time():
            return await asyncio.to_thread(
                scan, candidate.registration.artifact, self.artifacts, policy, self.limits
            )


async def sweep_once(runtime: ServiceRuntime, handlers: Handlers) -> int:
    """Fail every waiting stage past its deadline; returns how many DAGs were looked at."""
    now = utcnow()
    async with runtime.pool.acquire() as conn:
        due = await store.overdue(conn, now)
    for model, version, correlation in due:
        async with runtime.transaction(correlationid=correlation) as tx:
            candidate = await store.lock_candidate(tx.conn, model, version)
            if candidate is not None:  # a handler may have finished it meanwhile
                await handlers.drive(tx, candidate, now)
    return len(due)


async def sweep_forever(runtime: ServiceRuntime, handlers: Handlers, interval_s: float) -> None:
    """Run ``sweep_once`` at start and then every ``interval_s`` (deadlines live in the DB, so a
    restart loses none); a failed sweep is logged and tried again at the next interval."""

    async def sweep() -> None:
        count = await sweep_once(runtime, handlers)
        if count:
            log.info("deadline sweep: %d candidate(s) past a deadline", count)

    await run_every(
        "deadline sweep", interval_s, sweep, max_backoff_s=interval_s, logger=log, traceback=True
    )


async def _emit(
    tx: Tx, events: list[EventData], metrics: GateMetrics, candidate: store.Candidate | None = None
) -> None:
    """Emit a step's events as part of the candidate's lifecycle: its correlation id and trace,
    even when an approval, a CI report or a sweep is what moved the DAG."""
    metrics.count(events)
    if not events:
        return
    if candidate is None:
        for data in events:
            await tx.emit(data)
        return
    dag = candidate.dag
    with resume_trace(
        candidate.traceparent, "mlcp.gatekeeper.advance", model=dag.model, version=dag.version
    ):
        for data in events:
            await tx.emit(data, correlationid=candidate.correlation_id)
