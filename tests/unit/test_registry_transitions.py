"""What the registry's decisions produce (``transitions``): the audit rows and events of a
step, for the event handlers and the API's manual promotion and rollback alike. The rules of
the rollout state themselves are in test_registry_domain.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mlcp.contracts import ModelPromoted, ModelRolledBack
from mlcp.policy.platform import RolloutPolicy
from mlcp.registry import transitions
from mlcp.registry.domain import Conflict
from mlcp.registry.transitions import Origin, Rollout
from tests.integration.registry_support import degraded, gate_passed, run_finished

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
ALICE = Origin("alice", "manual")


def test_manual_promotion_announces_the_person_and_audits_before_and_after() -> None:
    before = Rollout(production="1.0.0", production_since=NOW - timedelta(days=1))
    step = transitions.promote(
        "churn",
        before,
        {"production": "1.0.0"},
        version="1.1.0",
        status="approved",
        alias="production",
        traffic_percent=None,
        reason="hotfix",
        origin=ALICE,
        now=NOW,
    )
    assert step.changes
    assert step.transition.reason == "hotfix"
    assert step.events == (
        ModelPromoted(
            model="churn",
            version="1.1.0",
            alias="production",
            traffic_percent=100.0,
            previous_version="1.0.0",
            cause="manual",
            actor="alice",
        ),
    )
    [entry] = step.audit
    assert (entry.actor, entry.action, entry.at, entry.version) == (
        "alice",
        "promotion",
        NOW,
        "1.1.0",
    )
    assert entry.before["production"] == "1.0.0"
    assert entry.after["production"] == "1.1.0"
    assert entry.after["alias"] == "production"
    assert entry.after["statuses"] == {"1.0.0": "archived", "1.1.0": "production"}
    assert entry.cause_event_id is None


def test_manual_promotion_without_a_reason_keeps_the_rule_s_reason() -> None:
    step = transitions.promote(
        "churn",
        Rollout(),
        {},
        version="1.0.0",
        status="candidate",
        alias="canary",
        traffic_percent=25,
        reason=None,
        origin=ALICE,
        now=NOW,
    )
    assert step.transition.reason == "gates passed"
    [promoted] = step.events
    assert isinstance(promoted, ModelPromoted)
    assert (promoted.alias, promoted.traffic_percent) == ("canary", 25)


def test_manual_promotion_that_contradicts_the_state_raises_conflict() -> None:
    with pytest.raises(Conflict, match="rejected"):
        transitions.promote(
            "churn",
            Rollout(),
            {},
            version="1.0.0",
            status="rejected",
            alias="production",
            traffic_percent=None,
            reason=None,
            origin=ALICE,
            now=NOW,
        )


def test_manual_rollback_of_production_announces_where_it_went() -> None:
    before = Rollout(production="1.1.0", production_since=NOW, rollback_target="1.0.0")
    step = transitions.rollback(
        "churn",
        before,
        {"production": "1.1.0"},
        alias="production",
        reason="bad numbers",
        origin=ALICE,
        now=NOW,
    )
    assert step.events == (
        ModelRolledBack(
            model="churn",
            alias="production",
            from_version="1.1.0",
            to_version="1.0.0",
            cause="manual",
            reason="bad numbers",
            actor="alice",
        ),
    )
    assert [e.action for e in step.audit] == ["rollback"]
    assert step.transition.statuses == {"1.1.0": "archived", "1.0.0": "production"}


def test_manual_rollback_with_nowhere_to_go_raises_conflict() -> None:
    with pytest.raises(Conflict, match="no version"):
        transitions.rollback(
            "churn", Rollout(), {}, alias="canary", reason=None, origin=ALICE, now=NOW
        )


def test_events_name_no_actor_when_an_event_caused_them() -> None:
    origin = Origin("mlcp/gatekeeper", "gate_passed", "event-1")
    step = transitions.gate_passed(
        Rollout(), gate_passed("1.0.0"), "candidate", RolloutPolicy(), origin, NOW
    )
    [promoted] = step.events
    assert isinstance(promoted, ModelPromoted)
    assert promoted.actor is None
    assert [(e.actor, e.cause_event_id) for e in step.audit] == [("mlcp/gatekeeper", "event-1")]


def test_a_decision_that_changes_nothing_has_no_rows_and_no_events() -> None:
    origin = Origin("mlcp/gatekeeper", "gate_passed", "event-1")
    step = transitions.gate_passed(
        Rollout(canary="1.0.0"), gate_passed("1.0.0"), "canary", RolloutPolicy(), origin, NOW
    )
    assert not step.changes
    assert (step.audit, step.events) == ((), ())
    assert "not a candidate" in step.transition.reason


def test_degraded_reason_is_cut_to_the_contract_limit() -> None:
    event = degraded("1.0.0", "canary")
    many = [e.model_copy(update={"metric": "m" * 100}) for e in event.evidence] * 60
    event = event.model_copy(update={"evidence": many})
    step = transitions.degraded(
        Rollout(canary="1.0.0"), event, RolloutPolicy(), Origin("mlcp/monitor", "degraded"), NOW
    )
    [rolled] = step.events
    assert isinstance(rolled, ModelRolledBack)
    assert rolled.reason is not None
    assert len(rolled.reason) == transitions.REASON_LIMIT
    assert rolled.reason.startswith("canary degraded: mmm")


def test_registration_maps_every_field_of_the_run() -> None:
    run = run_finished("run-7")
    registered = transitions.register(
        run,
        None,
        owner="mlcp/trainer",
        cause_event_id="event-7",
        correlation_id="lifecycle-7",
        traceparent=None,
        now=NOW,
    )
    v = registered.version
    assert (v.model, v.version, v.bump, v.previous_version, v.status) == (
        "churn",
        "1.0.0",
        None,
        None,
        "candidate",
    )
    assert v.metrics == run.metrics
    assert v.params == run.params
    assert v.datasets == [d.model_dump(mode="json") for d in run.datasets]
    assert v.feature_schema == [f.model_dump(mode="json") for f in run.feature_schema]
    assert v.reference_profile == run.reference_profile.model_dump(mode="json")
    assert (v.artifact_uri, v.artifact_sha256, v.artifact_format, v.artifact_size) == (
        run.artifact.uri,
        run.artifact.sha256,
        run.artifact.format,
        run.artifact.size_bytes,
    )
    assert (v.code_version, v.entrypoint, v.label) == (run.code_version, run.entrypoint, run.label)
    assert (v.training_reason, v.duration_s) == (run.reason, run.duration_s)
    assert (v.owner, v.cause_event_id, v.correlation_id) == (
        "mlcp/trainer",
        "event-7",
        "lifecycle-7",
    )
    assert v.created_at == v.status_changed_at == NOW
    assert registered.event.reference_profile == run.reference_profile
    assert registered.event.datasets == run.datasets
    assert registered.audit.after == {
        "status": "candidate",
        "run_id": "run-7",
        "bump": None,
        "previous_version": None,
        "artifact_sha256": run.artifact.sha256,
    }
