"""The approval DAG of one candidate version, as pure functions (no Kafka, no SQL, no I/O).

The whole state of a candidate is a ``Dag``; everything that can happen to it — registration,
a person's or CI's decision, the clock passing a deadline, a newer candidate — goes through
``advance`` (or ``supersede``), which returns the next ``Dag`` and the events to emit. Decisions
are an input *set* (first one per stage wins), so duplicates and out-of-order arrivals give
the same outcome.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

import semver

from mlcp.contracts import (
    ApprovalRequested,
    CheckPassed,
    DatasetRef,
    EventData,
    Evidence,
    GateFailed,
    GatePassed,
    ModelVersionRegistered,
)
from mlcp.policy.platform import GateStage, Threshold

AUTOMATIC = frozenset({"metrics", "data_quality", "baseline", "security_scan"})
"""Kinds decided by the gatekeeper itself as soon as the stage is ready."""

StageStatus = Literal["pending", "waiting", "passed", "failed"]
DagStatus = Literal["running", "passed", "failed", "superseded"]


@dataclass(frozen=True)
class StageState:
    """Where one stage stands: pending (dependencies open), waiting (for a person/CI/scan),
    passed or failed, with the evidence of its decision."""

    status: StageStatus = "pending"
    started_at: datetime | None = None
    deadline: datetime | None = None
    finished_at: datetime | None = None
    evidence: tuple[Evidence, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class Decision:
    """A person's approval/rejection (manual) or a CI report (external) for one stage."""

    stage: str
    kind: Literal["manual", "external"]
    passed: bool
    actor: str
    at: datetime
    """When it was made (the event's time): a decision made before the deadline counts."""
    detail: str | None = None


@dataclass(frozen=True)
class ScanReport:
    """What the artifact scan found (produced by ``mlcp.gatekeeper.scan``)."""

    expected_sha256: str
    actual_sha256: str | None
    """None when the artifact could not be read."""
    scanner: str
    """Who looked, e.g. 'allow-list+picklescan' or 'allow-list+skops'."""
    unsafe: tuple[str, ...] = ()
    """Globals or types refused (e.g. 'posix.system')."""
    error: str | None = None
    """Why the artifact is refused, in words (every finding, most serious first) or why it could
    not be read; a scan with an error fails."""


@dataclass(frozen=True)
class Dag:
    """The approval DAG of one candidate ``model``/``version`` and its state."""

    model: str
    version: str
    stages: tuple[GateStage, ...]
    state: Mapping[str, StageState]
    status: DagStatus = "running"
    passed_order: tuple[str, ...] = ()
    reason: str | None = None

    def stage(self, name: str) -> GateStage | None:
        """The configured stage called ``name``."""
        return next((s for s in self.stages if s.name == name), None)


@dataclass(frozen=True)
class Step:
    """The result of one ``advance``: the next state and the events to emit, in order."""

    dag: Dag
    events: list[EventData] = field(default_factory=list)
    needs_scan: bool = False
    """A security_scan stage is ready but no ScanReport was given: scan, then advance again."""


# --- lifecycle -----------------------------------------------------------------------------------


def start(model: str, version: str, stages: Sequence[GateStage]) -> Dag:
    """A new DAG for a registered candidate, every stage pending."""
    return Dag(model, version, tuple(stages), {s.name: StageState() for s in stages})


def ready_stages(dag: Dag) -> list[GateStage]:
    """Pending stages whose dependencies have all passed (none while the DAG is finished)."""
    if dag.status != "running":
        return []
    return [
        s
        for s in dag.stages
        if dag.state[s.name].status == "pending"
        and all(dag.state[d].status == "passed" for d in s.depends_on)
    ]


def advance(
    dag: Dag,
    candidate: ModelVersionRegistered,
    decisions: Mapping[str, Decision],
    now: datetime,
    scan: ScanReport | None = None,
) -> Step:
    """Run the DAG as far as it goes at ``now``: start ready stages, decide automatic ones,
    apply decisions to waiting ones, expire overdue ones; GatePassed when every stage passed."""
    events: list[EventData] = []
    needs_scan = False
    progressed = True
    while progressed and dag.status == "running":
        progressed = False
        for stage in ready_stages(dag):
            if stage.kind == "security_scan" and scan is None:
                needs_scan = True
                continue
            decided = stage.name in decisions and decisions[stage.name].kind == stage.kind
            dag, new = _start_stage(dag, stage, candidate, scan, now, decided=decided)
            events += new
            progressed = True
            if dag.status != "running":
                break
        if dag.status != "running":
            break
        for stage in dag.stages:
            if dag.state[stage.name].status != "waiting":
                continue
            dag, new = _resolve_waiting(dag, stage, decisions.get(stage.name), now)
            events += new
            progressed = progressed or bool(new)
            if dag.status != "running":
                break
    if (
        dag.status == "running"
        and dag.stages
        and all(st.status == "passed" for st in dag.state.values())
    ):
        dag = replace(dag, status="passed")
        events.append(GatePassed(model=dag.model, version=dag.version, stages=dag.passed_order))
    return Step(dag, events, needs_scan and dag.status == "running")


def _start_stage(
    dag: Dag,
    stage: GateStage,
    candidate: ModelVersionRegistered,
    scan: ScanReport | None,
    now: datetime,
    *,
    decided: bool = False,
) -> tuple[Dag, list[EventData]]:
    if stage.kind in AUTOMATIC:
        passed, evidence, reason = evaluate(stage, candidate, scan)
        return _finish(dag, stage, passed, evidence, reason, now, started_at=now)
    wait = stage.timeout if stage.kind == "external" else stage.expires
    deadline = now + wait if wait is not None else None
    dag = _with_stage(dag, stage.name, StageState("waiting", started_at=now, deadline=deadline))
    events: list[EventData] = []
    if stage.kind == "manual" and not decided:  # an early approval: nobody needs asking
        events.append(
            ApprovalRequested(
                model=dag.model, version=dag.version, stage=stage.name, expires_at=deadline
            )
        )
    return dag, events


def _resolve_waiting(
    dag: Dag, stage: GateStage, decision: Decision | None, now: datetime
) -> tuple[Dag, list[EventData]]:
    state = dag.state[stage.name]
    deadline = state.deadline
    if decision is not None and decision.kind == stage.kind:
        if deadline is not None and decision.at > deadline:
            return _expire(dag, stage, state, decision.at)
        reason = None if decision.passed else _decision_reason(stage, decision)
        evidence = (
            Evidence(
                metric="decision",
                observed=1.0 if decision.passed else 0.0,
                operator="==",
                threshold=1.0,
                satisfied=decision.passed,
                detail=_short(f"{_verb(stage, decision)} by {decision.actor}"),
            ),
        )
        return _finish(dag, stage, decision.passed, evidence, reason, now)
    if deadline is not None and now >= deadline:
        return _expire(dag, stage, state, now)
    return dag, []


def _expire(
    dag: Dag, stage: GateStage, state: StageState, at: datetime
) -> tuple[Dag, list[EventData]]:
    assert state.started_at is not None
    assert state.deadline is not None
    limit = (state.deadline - state.started_at).total_seconds()
    waited = max((at - state.started_at).total_seconds(), 0.0)
    what = "approval expired" if stage.kind == "manual" else "external check timed out"
    evidence = (
        Evidence(
            metric="wait_seconds",
            observed=round(waited, 3),
            operator="<=",
            threshold=limit,
            satisfied=False,
            detail=_short(f"{what} after {_human(timedelta(seconds=limit))}"),
        ),
    )
    within = _human(state.deadline - state.started_at)
    reason = f"{what}: stage '{stage.name}' got no decision within {within}"
    return _finish(dag, stage, False, evidence, reason, at)


def _finish(
    dag: Dag,
    stage: GateStage,
    passed: bool,
    evidence: tuple[Evidence, ...],
    reason: str | None,
    now: datetime,
    *,
    started_at: datetime | None = None,
) -> tuple[Dag, list[EventData]]:
    before = dag.state[stage.name]
    state = replace(
        before,
        status="passed" if passed else "failed",
        started_at=before.started_at or started_at,
        finished_at=now,
        evidence=evidence,
        reason=reason,
    )
    dag = _with_stage(dag, stage.name, state)
    model, version = dag.model, dag.version
    if passed:
        dag = replace(dag, passed_order=(*dag.passed_order, stage.name))
        event: EventData = CheckPassed(
            model=model, version=version, stage=stage.name, kind=stage.kind, evidence=evidence
        )
        return dag, [event]
    text = reason or f"stage '{stage.name}' failed"
    dag = replace(dag, status="failed", reason=text)
    event = GateFailed(
        model=model,
        version=version,
        stage=stage.name,
        kind=stage.kind,
        reason=text,
        evidence=evidence,
    )
    return dag, [event]


def _with_stage(dag: Dag, name: str, state: StageState) -> Dag:
    return replace(dag, state={**dag.state, name: state})


def is_newer(version: str, than: str) -> bool:
    """SemVer precedence: ``version`` comes after ``than``."""
    return semver.Version.parse(version) > semver.Version.parse(than)


def supersede(dag: Dag, newer_version: str, now: datetime) -> Step:
    """A newer candidate of the same model ends a running DAG: GateFailed on its open stage."""
    if dag.status != "running":
        return Step(dag)
    open_stages = [s for s in dag.stages if dag.state[s.name].status == "waiting"] or [
        s for s in dag.stages if dag.state[s.name].status == "pending"
    ]
    if not open_stages:
        return Step(dag)
    stage = open_stages[0]
    reason = f"superseded by the newer candidate {dag.model} {newer_version}"
    state = replace(dag.state[stage.name], status="failed", finished_at=now, reason=reason)
    dag = replace(_with_stage(dag, stage.name, state), status="superseded", reason=reason)
    event = GateFailed(
        model=dag.model, version=dag.version, stage=stage.name, kind=stage.kind, reason=reason
    )
    return Step(dag, [event])


def next_deadline(dag: Dag) -> datetime | None:
    """The earliest deadline of a waiting stage (when the sweep must look at this DAG again)."""
    deadlines = [st.deadline for st in dag.state.values() if st.status == "waiting" and st.deadline]
    return min(deadlines, default=None)


# --- inputs that arrive for a DAG ----------------------------------------------------------------


def disposition(dag: Dag | None, decision: Decision, earlier: Decision | None) -> tuple[str, str]:
    """What to do with an incoming decision: ('accepted' | 'buffered' | 'ignored', why)."""
    if dag is not None and dag.status != "running":
        return "ignored", f"the DAG already ended ({dag.status}: {dag.reason})"
    if earlier is not None:
        return "ignored", f"a decision for stage '{decision.stage}' was already recorded"
    if dag is None:
        return "buffered", "the version is not registered yet; kept until it is"
    stage = dag.stage(decision.stage)
    if stage is None:
        return "ignored", f"no stage '{decision.stage}' in the approval DAG of {dag.model}"
    if stage.kind != decision.kind:
        return "ignored", f"stage '{stage.name}' is of kind {stage.kind}, not {decision.kind}"
    status = dag.state[stage.name].status
    if status == "pending":
        return "buffered", f"stage '{stage.name}' waits for its dependencies; kept until then"
    return "accepted", f"stage '{stage.name}' is {status}"


def external_stage_for(stages: Iterable[GateStage], check: str) -> str:
    """The external stage a CI report names: by stage name (as the registry's API sends it),
    else by the stage's ``check`` name (as CI knows it); unknown names are kept as they are."""
    external = [s for s in stages if s.kind == "external"]
    if any(s.name == check for s in external):
        return check
    return next((s.name for s in external if s.check == check), check)


# --- check kinds ---------------------------------------------------------------------------------


def evaluate(
    stage: GateStage, candidate: ModelVersionRegistered, scan: ScanReport | None = None
) -> tuple[bool, tuple[Evidence, ...], str | None]:
    """Decide an automatic stage: (passed, evidence, reason when failed)."""
    if stage.kind == "metrics":
        evidence = evaluate_requirements(stage.require, candidate_metrics(candidate))
    elif stage.kind == "data_quality":
        evidence = evaluate_requirements(stage.require, data_quality(candidate.datasets))
    elif stage.kind == "baseline":
        evidence = (evaluate_baseline(stage, candidate),)
    elif stage.kind == "security_scan":
        if scan is None:
            raise ValueError("security_scan needs a ScanReport")
        evidence = evaluate_scan(scan)
    else:
        raise ValueError(f"stage kind {stage.kind} is not automatic")
    failed = [e for e in evidence if not e.satisfied]
    if not failed:
        return True, evidence, None
    return False, evidence, "; ".join(describe(e) for e in failed)


def evaluate_requirements(
    require: Mapping[str, Threshold], observed: Mapping[str, float]
) -> tuple[Evidence, ...]:
    """One Evidence per ``metric -> threshold`` (a missing metric never satisfies)."""
    out = []
    for metric, threshold in require.items():
        evidence = Evidence.evaluate(
            metric, observed.get(metric), threshold.operator, threshold.value
        )
        if metric not in observed:
            evidence = evidence.model_copy(update={"detail": f"{metric} was not reported"})
        out.append(evidence)
    return tuple(out)


def candidate_metrics(candidate: ModelVersionRegistered) -> dict[str, float]:
    """The candidate's metrics, plus ``data_completeness`` derived from its datasets if absent."""
    metrics = dict(candidate.metrics)
    if "data_completeness" not in metrics:
        completeness = data_quality(candidate.datasets).get("completeness")
        if completeness is not None:
            metrics["data_completeness"] = completeness
    return metrics


def data_quality(datasets: Sequence[DatasetRef]) -> dict[str, float]:
    """Measures of the training batches: row-weighted ``completeness``, ``rows``, ``batches``.

    A measure some dataset does not report is left out (and then fails any requirement on it).
    """
    out: dict[str, float] = {"batches": float(sum(len(d.batch_ids) for d in datasets))}
    if all(d.rows is not None for d in datasets):
        out["rows"] = float(sum(d.rows or 0 for d in datasets))
    if all(d.completeness is not None for d in datasets):
        total_rows = sum(d.rows or 0 for d in datasets)
        if total_rows > 0 and "rows" in out:
            out["completeness"] = (
                math.fsum((d.completeness or 0.0) * (d.rows or 0) for d in datasets) / total_rows
            )
        else:
            out["completeness"] = min(d.completeness or 0.0 for d in datasets)
    return out


def evaluate_baseline(stage: GateStage, candidate: ModelVersionRegistered) -> Evidence:
    """Challenger vs production on the same holdout, with MLflow MetricThreshold semantics.

    higher_is_better: candidate >= baseline + min_absolute_change and
    candidate >= baseline + min_relative_change * |baseline| (mirrored when lower is better);
    with neither set the candidate must simply not be worse. MLflow multiplies by the baseline
    itself; |baseline| gives the same for positive metrics and stays meaningful for negative ones.
    A baseline of 0 with a relative change falls back to "strictly better" (MLflow's rule).
    """
    metric = stage.metric or ""
    better = ">=" if stage.higher_is_better else "<="
    observed = candidate.metrics.get(metric)
    baseline = candidate.baseline
    if baseline is None:
        return Evidence(
            metric=metric,
            observed=observed,
            operator=better,
            threshold=None,
            satisfied=True,
            detail="no production version yet: nothing to compare against",
        )
    reference = baseline.metrics.get(metric)
    if observed is None or reference is None:
        who = "the candidate" if observed is None else f"production {baseline.version}"
        return Evidence(
            metric=metric,
            observed=observed,
            operator=better,
            threshold=reference,
            satisfied=False,
            detail=_short(f"{who} has no {metric} on the holdout"),
        )
    # Decimal on the decimal texts (as MLflow does): 0.9 * 1.05 must be 0.945, not 0.9450000001.
    sign = Decimal(1 if stage.higher_is_better else -1)
    ref = Decimal(str(reference))
    limits = [ref + sign * Decimal(str(stage.min_absolute_change or 0.0))]
    if stage.min_relative_change is not None:
        if ref == 0:
            limits.append(sign * Decimal("1e-10"))
        else:
            limits.append(ref + sign * Decimal(str(stage.min_relative_change)) * abs(ref))
    threshold = float(max(limits) if stage.higher_is_better else min(limits))
    evidence = Evidence.evaluate(metric, observed, better, threshold)
    return evidence.model_copy(
        update={"detail": _short(f"production {baseline.version}: {metric} {reference:g}")}
    )


def evaluate_scan(scan: ScanReport) -> tuple[Evidence, ...]:
    """Hash match and unsafe content of the artifact, as evidence."""
    matches = scan.actual_sha256 == scan.expected_sha256
    if scan.actual_sha256 is None:
        hash_detail = f"artifact unreadable: {scan.error}"
    elif matches:
        hash_detail = f"sha256 {scan.actual_sha256[:12]}… matches"
    else:
        hash_detail = (
            f"sha256 {scan.actual_sha256[:12]}… != registered {scan.expected_sha256[:12]}…"
        )
    evidence = [
        Evidence(
            metric="artifact_sha256_match",
            observed=1.0 if matches else 0.0,
            operator="==",
            threshold=1.0,
            satisfied=matches,
            detail=_short(hash_detail),
        )
    ]
    if scan.actual_sha256 is not None:
        clean = not scan.unsafe and scan.error is None
        if scan.error:
            detail = scan.error  # the scan's own words: the cause, the name, where
        elif scan.unsafe:
            detail = f"{scan.scanner}: unsafe {', '.join(scan.unsafe)}"
        else:
            detail = f"{scan.scanner}: nothing unsafe"
        evidence.append(
            Evidence(
                metric="unsafe_globals",
                observed=float(len(scan.unsafe)),
                operator="==",
                threshold=0.0,
                satisfied=clean,
                detail=_short(detail),
            )
        )
    return tuple(evidence)


# --- wording -------------------------------------------------------------------------------------


def describe(evidence: Evidence) -> str:
    """'accuracy 0.9 < required >= 0.92', or the detail for non-numeric checks."""
    if evidence.observed is None or evidence.threshold is None or evidence.metric in _WORDED:
        return evidence.detail or f"{evidence.metric} missing"
    text = (
        f"{evidence.metric} {evidence.observed:g} fails {evidence.operator} {evidence.threshold:g}"
    )
    return f"{text} ({evidence.detail})" if evidence.detail else text


_WORDED = frozenset({"artifact_sha256_match", "unsafe_globals", "decision", "wait_seconds"})


def _verb(stage: GateStage, decision: Decision) -> str:
    if stage.kind == "manual":
        return "approved" if decision.passed else "rejected"
    return "reported passed" if decision.passed else "reported failed"


def _decision_reason(stage: GateStage, decision: Decision) -> str:
    text = f"stage '{stage.name}' {_verb(stage, decision)} by {decision.actor}"
    return f"{text}: {decision.detail}" if decision.detail else text


def _human(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _short(text: str, limit: int = 256) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
