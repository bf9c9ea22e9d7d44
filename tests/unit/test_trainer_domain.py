"""The trainer's pure decisions: threshold crossings, drift cool-down, production, run claims."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcp.contracts import ModelPromoted, ModelRolledBack
from mlcp.trainer import domain, ledger, runs

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_999_rows_request_nothing() -> None:
    assert (
        ledger.threshold_request(
            model="churn", dataset="ds", rows_since_last_run=999, threshold=1000
        )
        is None
    )


def test_1000_rows_request_one_data_threshold_retrain() -> None:
    request = ledger.threshold_request(
        model="churn",
        dataset="ds",
        rows_since_last_run=1000,
        threshold=1000,
        trigger_event_ids=["e1", "e2"],
    )
    assert request is not None
    assert request.reason == "data_threshold"
    assert (request.model, request.dataset) == ("churn", "ds")
    assert (request.rows_since_last_run, request.threshold) == (1000, 1000)
    assert request.trigger_event_ids == ("e1", "e2")


def test_trigger_ids_are_bounded_to_the_most_recent() -> None:
    ids = [f"e{i}" for i in range(1500)]
    request = ledger.threshold_request(
        model="m", dataset="d", rows_since_last_run=5, threshold=1, trigger_event_ids=ids
    )
    assert request is not None
    assert len(request.trigger_event_ids) == 1000
    assert request.trigger_event_ids[-1] == "e1499"


@settings(max_examples=40)
@given(
    batches=st.lists(st.integers(min_value=0, max_value=700), max_size=40),
    threshold=st.integers(min_value=1, max_value=2000),
)
def test_one_request_per_crossing(batches: list[int], threshold: int) -> None:
    # Replays the handler's use of the decision: the counter restarts at each request.
    consumed, total, requests = 0, 0, 0
    for rows in batches:
        total += rows
        if ledger.threshold_request(
            model="m", dataset="d", rows_since_last_run=total - consumed, threshold=threshold
        ):
            requests += 1
            consumed = total
        assert total - consumed < threshold, "a crossing was left unrequested"
    assert requests <= total // threshold


def test_drift_outside_cooldown_requests_a_retrain() -> None:
    request = ledger.drift_request(
        model="churn",
        dataset="ds",
        detected_at=T0,
        last_drift_request_at=None,
        cooldown=timedelta(minutes=30),
        trigger_event_id="drift-1",
    )
    assert request is not None
    assert request.reason == "drift"
    assert request.trigger_event_ids == ("drift-1",)


def test_drift_storm_inside_cooldown_gives_one_retrain() -> None:
    cooldown = timedelta(minutes=30)
    last: datetime | None = None
    requested = []
    for minute in range(0, 90, 2):  # a DriftDetected every 2 minutes for 90 minutes
        at = T0 + timedelta(minutes=minute)
        if ledger.drift_request(
            model="m",
            dataset="d",
            detected_at=at,
            last_drift_request_at=last,
            cooldown=cooldown,
            trigger_event_id=f"d{minute}",
        ):
            requested.append(minute)
            last = at
    assert requested == [0, 30, 60]


def promoted(version: str, alias: str) -> ModelPromoted:
    return ModelPromoted(
        model="churn", version=version, alias=alias, traffic_percent=100, cause="canary_healthy"
    )


def test_production_projection_follows_promotions_and_rollbacks() -> None:
    current = domain.production_after_promotion(None, promoted("1.0.0", "production"))
    assert current == "1.0.0"
    assert domain.production_after_promotion(current, promoted("1.1.0", "canary")) == "1.0.0"
    current = domain.production_after_promotion(current, promoted("1.1.0", "production"))
    back = ModelRolledBack(
        model="churn",
        alias="production",
        from_version="1.1.0",
        to_version="1.0.0",
        cause="degraded",
    )
    assert domain.production_after_rollback(current, back) == "1.0.0"
    canary_removed = ModelRolledBack(
        model="churn", alias="canary", from_version="1.2.0", to_version=None, cause="degraded"
    )
    assert domain.production_after_rollback("1.0.0", canary_removed) == "1.0.0"


def test_a_run_is_retried_until_max_attempts_then_given_up() -> None:
    assert [runs.claim_action(a, 3) for a in (1, 2, 3, 4)] == [
        "start",
        "start",
        "start",
        "give_up",
    ]


def test_child_failures_are_named() -> None:
    ok = runs.ChildOutcome(exitcode=0, timed_out=False, has_result=True)
    assert runs.child_failure(ok, 10) is None
    hung = runs.ChildOutcome(exitcode=-9, timed_out=True, has_result=False)
    assert "did not finish within 10s" in (runs.child_failure(hung, 10) or "")
    killed = runs.ChildOutcome(exitcode=-9, timed_out=False, has_result=False)
    assert runs.child_failure(killed, 10) == "training process died with signal 9"
    exited = runs.ChildOutcome(exitcode=7, timed_out=False, has_result=False)
    assert "exited with code 7" in (runs.child_failure(exited, 10) or "")


def test_a_batch_is_its_content_whatever_its_id() -> None:
    ids = {"b1": "a" * 64}
    contents = {"a" * 64}

    def admit(batch_id: str, sha: str, actual: str | None = None) -> str:
        return ledger.admit_batch(
            batch_id=batch_id, sha256=sha, actual=actual, ids=ids, contents=contents
        )

    assert admit("b1", "a" * 64) == "duplicate", "the same batch re-sent"
    assert admit("b1-again", "a" * 64) == "duplicate", "the same file under a new id"
    assert admit("sha256-aaaaaaaaaaaaaaaa", "a" * 64) == "duplicate"
    assert admit("b1", "b" * 64) == "conflict", "an id re-used for other content is refused"
    assert admit("b2", "b" * 64) == "accept"
    assert admit("b2", "b" * 64, actual="c" * 64) == "mismatch"
    assert admit("b1-again", "a" * 64, actual="c" * 64) == "duplicate", (
        "a re-announcement is never counted, so its file is not checked again"
    )
