"""The approval DAG as pure functions: readiness, joins, each check kind with its evidence,
decisions, timeouts, supersession, idempotence and order independence."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcp.contracts import (
    ApprovalRequested,
    CheckPassed,
    GateFailed,
    GatePassed,
    ModelVersionRegistered,
)
from mlcp.gatekeeper import domain
from mlcp.gatekeeper.domain import Decision, ScanReport
from mlcp.policy.platform import GateStage, parse_platform_config

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SHA = "a" * 64


def registered(
    version: str = "1.3.0",
    *,
    model: str = "churn",
    metrics: dict[str, float] | None = None,
    baseline: dict[str, Any] | None = None,
    datasets: list[dict[str, Any]] | None = None,
    artifact: dict[str, Any] | None = None,
) -> ModelVersionRegistered:
    """A valid ModelVersionRegistered with sensible defaults (also used by integration tests)."""
    return ModelVersionRegistered.model_validate(
        {
            "model": model,
            "version": version,
            "run_id": f"run-{version}",
            "metrics": {"accuracy": 0.95, "latency_p95_ms": 120.0} if metrics is None else metrics,
            "params": {"C": 1.0},
            "baseline": baseline,
            "artifact": artifact
            or {"uri": "file:///tmp/none.skops", "sha256": SHA, "format": "skops"},
            "reference_profile": {
                "rows": 10,
                "features": {
                    "x": {
                        "kind": "numeric",
                        "count": 10,
                        "bin_edges": [0.0, 1.0],
                        "bin_proportions": [1.0],
                    }
                },
            },
            "feature_schema": [{"name": "x", "dtype": "float64"}],
            "datasets": datasets
            or [
                {
                    "dataset": "churn-events",
                    "batch_ids": ["b1", "b2"],
                    "sha256": SHA,
                    "rows": 2000,
                    "completeness": 0.99,
                }
            ],
        }
    )


def stages(yaml_list: str) -> list[GateStage]:
    """Stages parsed and validated exactly as the service does at start."""
    text = f'models: {{churn: {{dataset: d, label: l, train: "a:b", gates: [{yaml_list}]}}}}'
    return parse_platform_config(text).model("churn").gates


FOUR = stages(
    '{name: quality, kind: metrics, require: {accuracy: ">= 0.92", latency_p95_ms: "<= 200"}},'
    ' {name: data, kind: data_quality, require: {completeness: ">= 0.98", rows: ">= 1000"}},'
    " {name: baseline, kind: baseline, depends_on: [quality], metric: accuracy,"
    " min_absolute_change: 0.0},"
    " {name: scan, kind: security_scan, depends_on: [baseline, data]}"
)
FULL = stages(
    '{name: quality, kind: metrics, require: {accuracy: ">= 0.92"}},'
    " {name: review, kind: external, timeout: 1h},"
    " {name: approve, kind: manual, depends_on: [quality, review], expires: 2h}"
)
CLEAN = ScanReport(expected_sha256=SHA, actual_sha256=SHA, scanner="skops")


def run(
    dag_stages: list[GateStage],
    candidate: ModelVersionRegistered | None = None,
    decisions: dict[str, Decision] | None = None,
    now: datetime = T0,
    scan: ScanReport | None = CLEAN,
) -> domain.Step:
    dag = domain.start("churn", "1.3.0", dag_stages)
    return domain.advance(dag, candidate or registered(), decisions or {}, now, scan)


def grant(stage: str, at: datetime = T0, passed: bool = True) -> Decision:
    return Decision(stage=stage, kind="manual", passed=passed, actor="alice", at=at)


def report(stage: str, at: datetime = T0, passed: bool = True) -> Decision:
    return Decision(stage=stage, kind="external", passed=passed, actor="github-ci", at=at)


# --- readiness and joins -------------------------------------------------------------------------


def test_ready_stages_are_those_whose_dependencies_all_passed() -> None:
    dag = domain.start("churn", "1.3.0", FOUR)
    assert [s.name for s in domain.ready_stages(dag)] == ["quality", "data"]
    passed = domain.StageState("passed")
    dag = replace(dag, state={**dag.state, "quality": passed})
    assert [s.name for s in domain.ready_stages(dag)] == ["data", "baseline"]
    # scan joins baseline and data: one of them is not enough.
    dag = replace(dag, state={**dag.state, "data": passed, "baseline": passed})
    assert [s.name for s in domain.ready_stages(dag)] == ["scan"]
    assert domain.ready_stages(replace(dag, status="failed")) == []


def test_all_automatic_dag_passes_in_one_advance_with_evidence() -> None:
    step = run(FOUR)
    assert step.dag.status == "passed"
    kinds = [type(e) for e in step.events]
    assert kinds == [CheckPassed] * 4 + [GatePassed]
    assert step.events[-1] == GatePassed(
        model="churn", version="1.3.0", stages=("quality", "data", "baseline", "scan")
    )
    quality = step.events[0]
    assert isinstance(quality, CheckPassed)
    assert [
        (e.metric, e.observed, e.operator, e.threshold, e.satisfied) for e in quality.evidence
    ] == [
        ("accuracy", 0.95, ">=", 0.92, True),
        ("latency_p95_ms", 120.0, "<=", 200.0, True),
    ]


def test_security_scan_waits_for_a_report_without_blocking_other_stages() -> None:
    step = run(FOUR, scan=None)
    assert step.needs_scan
    assert step.dag.status == "running"
    assert step.dag.state["scan"].status == "pending"
    assert step.dag.passed_order == ("quality", "data", "baseline")
    again = domain.advance(step.dag, registered(), {}, T0, CLEAN)
    assert not again.needs_scan
    assert [type(e) for e in again.events] == [CheckPassed, GatePassed]


# --- each automatic kind -------------------------------------------------------------------------


def test_metrics_failure_ends_the_dag_with_observed_operator_threshold() -> None:
    step = run(FOUR, registered(metrics={"accuracy": 0.90, "latency_p95_ms": 250.0}))
    assert step.dag.status == "failed"
    failed = [e for e in step.events if isinstance(e, GateFailed)]
    assert len(failed) == 1
    assert failed[0].stage == "quality"
    assert failed[0].reason == "accuracy 0.9 fails >= 0.92; latency_p95_ms 250 fails <= 200"
    assert [(e.observed, e.threshold, e.satisfied) for e in failed[0].evidence] == [
        (0.90, 0.92, False),
        (250.0, 200.0, False),
    ]
    # Nothing after the failure: baseline and scan never started, no GatePassed.
    assert step.dag.state["baseline"].status == "pending"
    assert not any(isinstance(e, GatePassed) for e in step.events)


def test_missing_metric_fails_and_says_so() -> None:
    step = run(FOUR, registered(metrics={"accuracy": 0.95}))
    failed = next(e for e in step.events if isinstance(e, GateFailed))
    assert failed.evidence[1].observed is None
    assert "latency_p95_ms was not reported" in failed.reason


def test_data_completeness_metric_is_derived_from_the_datasets() -> None:
    dag_stages = stages('{name: q, kind: metrics, require: {data_completeness: ">= 0.98"}}')
    low = registered(
        datasets=[
            {"dataset": "a", "batch_ids": ["1"], "sha256": SHA, "rows": 900, "completeness": 1.0},
            {"dataset": "b", "batch_ids": ["2"], "sha256": SHA, "rows": 100, "completeness": 0.5},
        ]
    )
    step = run(dag_stages, low)
    failed = step.events[0]
    assert isinstance(failed, GateFailed)
    assert failed.evidence[0].observed == pytest.approx(0.95)  # row-weighted, not the mean 0.75
    reported = registered(metrics={"data_completeness": 0.99})
    assert run(dag_stages, reported).dag.status == "passed"


@pytest.mark.parametrize(
    ("datasets", "failing"),
    [
        ([{"rows": 500, "completeness": 0.99}], ["rows"]),
        ([{"rows": 5000, "completeness": 0.9}], ["completeness"]),
        ([{"rows": None, "completeness": None}], ["completeness", "rows"]),
    ],
)
def test_data_quality_checks_completeness_and_rows(
    datasets: list[dict[str, Any]], failing: list[str]
) -> None:
    dag_stages = stages(
        '{name: data, kind: data_quality, require: {completeness: ">= 0.98", rows: ">= 1000"}}'
    )
    full = [{"dataset": "d", "batch_ids": ["b"], "sha256": SHA, **d} for d in datasets]
    step = run(dag_stages, registered(datasets=full))
    failed = step.events[0]
    assert isinstance(failed, GateFailed)
    assert sorted(e.metric for e in failed.evidence if not e.satisfied) == failing


BASELINE = {"version": "1.2.0", "metrics": {"accuracy": 0.90, "log_loss": 0.40}}


@pytest.mark.parametrize(
    ("spec", "candidate", "passes", "threshold"),
    [
        ("min_absolute_change: 0.0", 0.90, True, 0.90),
        ("min_absolute_change: 0.0", 0.89, False, 0.90),
        ("min_absolute_change: 0.02", 0.915, False, 0.92),
        ("min_absolute_change: 0.02", 0.92, True, 0.92),
        ("min_relative_change: 0.05", 0.944, False, 0.945),
        ("min_relative_change: 0.05, min_absolute_change: 0.01", 0.945, True, 0.945),
        ("", 0.90, True, 0.90),
    ],
)
def test_baseline_follows_mlflow_metric_threshold(
    spec: str, candidate: float, passes: bool, threshold: float
) -> None:
    dag_stages = stages(f"{{name: b, kind: baseline, metric: accuracy, {spec}}}")
    step = run(dag_stages, registered(metrics={"accuracy": candidate}, baseline=BASELINE))
    evidence = step.dag.state["b"].evidence[0]
    assert evidence.satisfied is passes
    assert evidence.threshold == pytest.approx(threshold)
    assert evidence.detail == "production 1.2.0: accuracy 0.9"


def test_baseline_lower_is_better_mirrors_the_threshold() -> None:
    dag_stages = stages(
        "{name: b, kind: baseline, metric: log_loss, higher_is_better: false,"
        " min_relative_change: 0.1}"
    )
    better = registered(metrics={"log_loss": 0.35}, baseline=BASELINE)
    worse = registered(metrics={"log_loss": 0.37}, baseline=BASELINE)
    assert run(dag_stages, better).dag.status == "passed"
    step = run(dag_stages, worse)
    evidence = step.dag.state["b"].evidence[0]
    assert (evidence.operator, evidence.threshold) == ("<=", pytest.approx(0.36))
    assert step.dag.status == "failed"


def test_baseline_without_production_passes_and_says_why() -> None:
    dag_stages = stages("{name: b, kind: baseline, metric: accuracy, min_absolute_change: 0.01}")
    step = run(dag_stages, registered(baseline=None))
    evidence = step.dag.state["b"].evidence[0]
    assert step.dag.status == "passed"
    assert evidence.satisfied is True
    assert evidence.threshold is None
    assert evidence.detail == "no production version yet: nothing to compare against"


def test_baseline_missing_the_metric_fails() -> None:
    dag_stages = stages("{name: b, kind: baseline, metric: f1}")
    step = run(dag_stages, registered(metrics={"f1": 0.8}, baseline=BASELINE))
    assert step.dag.status == "failed"
    assert step.dag.reason == "production 1.2.0 has no f1 on the holdout"


@pytest.mark.parametrize(
    ("scan", "reason"),
    [
        (
            ScanReport(SHA, "b" * 64, "skops"),
            f"sha256 {'b' * 12}… != registered {'a' * 12}…",
        ),
        (
            ScanReport(SHA, SHA, "picklescan", unsafe=("posix.system",)),
            "picklescan: unsafe posix.system",
        ),
        (ScanReport(SHA, None, "none", error="no such file"), "artifact unreadable: no such file"),
        (
            ScanReport(
                SHA,
                SHA,
                "allow-list+picklescan",
                unsafe=("posix.system",),
                error="global posix.system is refused: it can run code (in m.pkl)",
            ),
            "global posix.system is refused: it can run code (in m.pkl)",
        ),
    ],
)
def test_security_scan_fails_on_hash_mismatch_unsafe_content_or_unreadable(
    scan: ScanReport, reason: str
) -> None:
    step = run(stages("{name: scan, kind: security_scan}"), scan=scan)
    assert step.dag.status == "failed"
    assert step.dag.reason == reason


# --- manual and external stages ------------------------------------------------------------------


def test_manual_stage_requests_approval_with_expiry_once_dependencies_pass() -> None:
    step = run(FULL)
    assert step.dag.state["review"].status == "waiting"
    assert step.dag.state["review"].deadline == T0 + timedelta(hours=1)
    assert step.dag.state["approve"].status == "pending"  # review has not passed yet
    assert not any(isinstance(e, ApprovalRequested) for e in step.events)
    step = domain.advance(step.dag, registered(), {"review": report("review")}, T0)
    requested = [e for e in step.events if isinstance(e, ApprovalRequested)]
    assert requested == [
        ApprovalRequested(
            model="churn", version="1.3.0", stage="approve", expires_at=T0 + timedelta(hours=2)
        )
    ]
    decisions = {"review": report("review"), "approve": grant("approve")}
    step = domain.advance(step.dag, registered(), decisions, T0 + timedelta(minutes=5))
    assert [type(e) for e in step.events] == [CheckPassed, GatePassed]
    assert step.events[-1] == GatePassed(
        model="churn", version="1.3.0", stages=("quality", "review", "approve")
    )


def test_rejection_fails_the_gate_naming_the_approver() -> None:
    decisions = {"review": report("review"), "approve": grant("approve", passed=False)}
    step = run(FULL, decisions=decisions)
    assert step.dag.status == "failed"
    assert step.dag.reason == "stage 'approve' rejected by alice"


def test_external_check_times_out_at_its_deadline() -> None:
    waiting = run(FULL).dag
    assert domain.next_deadline(waiting) == T0 + timedelta(hours=1)
    early = domain.advance(waiting, registered(), {}, T0 + timedelta(minutes=59))
    assert early.events == []
    late = domain.advance(waiting, registered(), {}, T0 + timedelta(hours=1))
    assert late.dag.status == "failed"
    failed = late.events[0]
    assert isinstance(failed, GateFailed)
    assert failed.stage == "review"
    assert failed.reason == "external check timed out: stage 'review' got no decision within 1h"
    assert (failed.evidence[0].metric, failed.evidence[0].threshold) == ("wait_seconds", 3600.0)


def test_a_report_made_after_the_deadline_counts_as_a_timeout_even_if_processed_first() -> None:
    waiting = run(FULL).dag
    late_report = report("review", at=T0 + timedelta(hours=2))
    step = domain.advance(waiting, registered(), {"review": late_report}, T0 + timedelta(hours=2))
    assert step.dag.status == "failed"
    assert "timed out" in (step.dag.reason or "")
    # …while one made before the deadline but processed after it still counts.
    on_time = report("review", at=T0 + timedelta(minutes=30))
    step = domain.advance(waiting, registered(), {"review": on_time}, T0 + timedelta(hours=3))
    assert step.dag.state["review"].status == "passed"


def test_manual_approval_expires() -> None:
    dag = run(FULL, decisions={"review": report("review")}).dag
    step = domain.advance(dag, registered(), {"review": report("review")}, T0 + timedelta(hours=2))
    assert step.dag.reason == "approval expired: stage 'approve' got no decision within 2h"


def test_a_decision_of_the_wrong_kind_does_not_resolve_a_stage() -> None:
    wrong = Decision(stage="review", kind="manual", passed=True, actor="bob", at=T0)
    assert run(FULL, decisions={"review": wrong}).dag.state["review"].status == "waiting"


# --- dispositions of incoming decisions ----------------------------------------------------------


def test_disposition_buffers_early_decisions_and_ignores_late_or_duplicate_ones() -> None:
    waiting = run(FULL).dag
    assert domain.disposition(None, grant("approve"), None)[0] == "buffered"
    assert domain.disposition(waiting, grant("approve"), None)[0] == "buffered"
    assert domain.disposition(waiting, report("review"), None)[0] == "accepted"
    assert domain.disposition(waiting, report("review"), report("review")) == (
        "ignored",
        "a decision for stage 'review' was already recorded",
    )
    assert domain.disposition(waiting, report("nope"), None)[1] == (
        "no stage 'nope' in the approval DAG of churn"
    )
    assert domain.disposition(waiting, grant("review"), None)[1] == (
        "stage 'review' is of kind external, not manual"
    )
    failed = run(FULL, registered(metrics={"accuracy": 0.5})).dag
    verdict, why = domain.disposition(failed, report("review"), None)
    assert verdict == "ignored"
    assert why.startswith("the DAG already ended (failed: accuracy 0.5 fails >= 0.92")


def test_external_stage_is_found_by_its_check_name() -> None:
    named = stages("{name: review, kind: external, check: code-review}")
    assert domain.external_stage_for(named, "code-review") == "review"
    assert domain.external_stage_for(named, "review") == "review"
    assert domain.external_stage_for(named, "other") == "other"


# --- supersession --------------------------------------------------------------------------------


def test_newer_candidate_supersedes_a_pending_older_one() -> None:
    waiting = run(FULL).dag
    assert domain.is_newer("1.4.0", "1.3.0")
    assert not domain.is_newer("1.3.0", "1.10.0")
    step = domain.supersede(waiting, "1.4.0", T0)
    assert step.dag.status == "superseded"
    assert step.events == [
        GateFailed(
            model="churn",
            version="1.3.0",
            stage="review",
            kind="external",
            reason="superseded by the newer candidate churn 1.4.0",
        )
    ]
    # Finished DAGs are not touched; later decisions about a superseded one are ignored.
    assert domain.supersede(step.dag, "1.5.0", T0).events == []
    assert domain.disposition(step.dag, report("review"), None)[0] == "ignored"
    assert domain.advance(step.dag, registered(), {"review": report("review")}, T0).events == []


# --- idempotence and order independence ----------------------------------------------------------


def test_advancing_twice_changes_nothing() -> None:
    step = run(FULL)
    again = domain.advance(step.dag, registered(), {}, T0)
    assert again.dag == step.dag
    assert again.events == []
    done = run(FOUR).dag
    assert domain.advance(done, registered(), {}, T0, CLEAN).events == []


@settings(max_examples=30, deadline=None)
@given(
    order=st.permutations(["review", "approve", "dup-review", "tick"]),
    approve=st.booleans(),
)
def test_outcome_does_not_depend_on_the_order_of_inputs(order: list[str], approve: bool) -> None:
    """Decisions arriving in any order, duplicated, with clock ticks between: same outcome."""
    inputs = {
        "review": ("review", report("review")),
        "dup-review": ("review", report("review", passed=False)),  # a second report: ignored
        "approve": ("approve", grant("approve", passed=approve)),
    }
    dag = domain.start("churn", "1.3.0", FULL)
    decisions: dict[str, Decision] = {}
    emitted: list[Any] = []
    first = {}
    for item in order:
        if item in inputs:
            stage, decision = inputs[item]
            first.setdefault(stage, item)
            if domain.disposition(dag, decision, decisions.get(stage))[0] != "ignored":
                decisions[stage] = decision
        step = domain.advance(dag, registered(), decisions, T0 + timedelta(minutes=1))
        dag, emitted = step.dag, emitted + step.events
    review_passes = first["review"] == "review"
    expected = "passed" if review_passes and approve else "failed"
    assert dag.status == expected
    finals = [e for e in emitted if isinstance(e, GatePassed | GateFailed)]
    assert len(finals) == 1


def test_every_permutation_of_automatic_stage_order_gives_the_same_result() -> None:
    for perm in itertools.permutations(FOUR):
        dag = domain.start("churn", "1.3.0", list(perm))
        step = domain.advance(dag, registered(), {}, T0, CLEAN)
        assert step.dag.status == "passed"
        assert set(step.dag.passed_order) == {"quality", "data", "baseline", "scan"}


def test_an_approval_already_given_when_the_stage_opens_is_not_requested_again() -> None:
    decisions = {"review": report("review"), "approve": grant("approve")}
    step = run(FULL, decisions=decisions)
    assert step.dag.status == "passed"
    assert not any(isinstance(e, ApprovalRequested) for e in step.events)


def test_a_failed_external_report_fails_the_stage_with_the_reporter_and_details() -> None:
    failed_report = Decision(
        stage="review",
        kind="external",
        passed=False,
        actor="github-ci",
        at=T0,
        detail="2 blocking comments",
    )
    step = run(FULL, decisions={"review": failed_report})
    assert step.dag.status == "failed"
    assert step.dag.reason == "stage 'review' reported failed by github-ci: 2 blocking comments"
    assert step.dag.state["approve"].status == "pending"


@st.composite
def random_dags(draw: st.DrawFn) -> list[GateStage]:
    """Acyclic DAGs of metrics stages: each stage may depend on any earlier one."""
    size = draw(st.integers(1, 7))
    out = []
    for i in range(size):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=i)) if i else set()
        out.append(
            GateStage.model_validate(
                {
                    "name": f"s{i}",
                    "kind": "metrics",
                    "require": {"accuracy": ">= 0.5"},
                    "depends_on": [f"s{d}" for d in sorted(deps)],
                }
            )
        )
    return draw(st.permutations(out))


@settings(max_examples=40, deadline=None)
@given(dag_stages=random_dags())
def test_any_dag_passes_every_stage_after_its_dependencies(dag_stages: list[GateStage]) -> None:
    step = run(dag_stages)
    assert step.dag.status == "passed"
    order = step.dag.passed_order
    assert sorted(order) == sorted(s.name for s in dag_stages)
    for stage in dag_stages:
        assert all(order.index(d) < order.index(stage.name) for d in stage.depends_on)
