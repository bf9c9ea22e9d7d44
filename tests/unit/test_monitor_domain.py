"""Window edges and the canary / rollback-window decision rules of the monitor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcp.monitor.domain import (
    EPOCH,
    TARGET_MISMATCH,
    OpenWindow,
    TrafficStats,
    judge_canary,
    judge_production_window,
    measures,
    misfit,
    production_windows_due,
    split_windows,
    to_datetime64,
    traffic_stats_of,
    unknown_limits,
)
from mlcp.policy.platform import BakePolicy, RolloutPolicy, Threshold
from mlcp.policy.target import DEFAULT_TARGET, Target

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def stamps(*seconds: float) -> object:
    return to_datetime64([T0 + timedelta(seconds=s) for s in seconds])


def test_a_window_closes_exactly_at_its_size_and_the_next_one_starts() -> None:
    segments, state = split_windows(OpenWindow(seq=1), stamps(*range(5)), size=5, max_age=HOUR)
    assert [(s.seq, s.start, s.stop, s.closes) for s in segments] == [(1, 0, 5, True)]
    assert segments[0].window.size == 5
    assert segments[0].window.started_at == T0
    assert segments[0].window.ended_at == T0 + timedelta(seconds=4)
    assert state == OpenWindow(seq=2)


def test_one_batch_can_fill_several_windows_and_leave_one_open() -> None:
    open_ = OpenWindow(seq=3, size=3, started_at=T0, ended_at=T0)
    segments, state = split_windows(open_, stamps(*range(1, 13)), size=5, max_age=HOUR)
    assert [(s.seq, s.start, s.stop, s.closes) for s in segments] == [
        (3, 0, 2, True),
        (4, 2, 7, True),
        (5, 7, 12, True),
    ]
    assert state.seq == 6
    assert state.size == 0
    segments, state = split_windows(open_, stamps(1), size=5, max_age=HOUR)
    assert [(s.seq, s.closes) for s in segments] == [(3, False)]
    assert state.size == 4
    assert state.started_at == T0


def test_a_window_closes_by_age_when_a_row_arrives_max_age_after_its_first() -> None:
    open_ = OpenWindow(seq=1, size=2, started_at=T0, ended_at=T0)
    just_before = 3599.999
    segments, state = split_windows(open_, stamps(just_before, 3600, 3601), size=100, max_age=HOUR)
    # The row at exactly max_age closes the window (≥) and opens the next one.
    assert [(s.seq, s.start, s.stop, s.closes) for s in segments] == [
        (1, 0, 1, True),
        (2, 1, 3, False),
    ]
    assert segments[0].window.size == 3
    assert state.seq == 2
    assert state.size == 2
    assert state.started_at == T0 + HOUR


def test_an_expired_window_closes_even_when_no_row_of_the_batch_joins_it() -> None:
    open_ = OpenWindow(seq=7, size=4, started_at=T0, ended_at=T0)
    segments, _state = split_windows(open_, stamps(7200), size=100, max_age=HOUR)
    assert [(s.seq, s.start, s.stop, s.closes) for s in segments] == [
        (7, 0, 0, True),
        (8, 0, 1, False),
    ]
    assert segments[0].window.size == 4


def policy(**degrade: str) -> RolloutPolicy:
    return RolloutPolicy(
        bake=BakePolicy(min_predictions=100, max_duration=timedelta(minutes=30)),
        degrade_if={k: Threshold.model_validate(v) for k, v in degrade.items()}
        or RolloutPolicy().degrade_if,
    )


def test_a_canary_keeps_baking_until_min_predictions_or_max_duration() -> None:
    stats = TrafficStats(count=99, errors=0, latency_p95_ms=10)
    observed = measures(stats, baseline_accuracy=None, drift_share=None)
    assert judge_canary(policy(), stats, observed, timedelta(minutes=29)) is None


def test_a_healthy_canary_reports_every_limit_respected() -> None:
    stats = TrafficStats(count=100, errors=2, latency_p95_ms=120, labelled=50, correct=48)
    observed = measures(stats, baseline_accuracy=0.95, drift_share=0.0)
    verdict = judge_canary(policy(), stats, observed, timedelta(minutes=1))
    assert verdict is not None
    assert verdict.healthy
    assert {e.metric for e in verdict.evidence} == {"error_rate", "latency_p95_ms", "accuracy_drop"}
    assert not any(e.satisfied for e in verdict.evidence)


@pytest.mark.parametrize(
    ("stats", "baseline", "crossed"),
    [
        (TrafficStats(count=100, errors=6, latency_p95_ms=10), None, "error_rate"),
        (TrafficStats(count=100, errors=5, latency_p95_ms=250.1), None, "latency_p95_ms"),
        (
            TrafficStats(count=100, latency_p95_ms=1, labelled=100, correct=91),
            0.95,
            "accuracy_drop",
        ),
    ],
)
def test_each_limit_crossed_degrades_the_canary(
    stats: TrafficStats, baseline: float | None, crossed: str
) -> None:
    observed = measures(stats, baseline_accuracy=baseline, drift_share=None)
    verdict = judge_canary(policy(), stats, observed, timedelta(0))
    assert verdict is not None
    assert not verdict.healthy
    assert [e.metric for e in verdict.evidence if e.satisfied] == [crossed]


def test_limits_at_their_boundary_are_not_crossed() -> None:
    # degrade_if says "> 0.05": an error rate of exactly 0.05 is still healthy.
    stats = TrafficStats(count=100, errors=5, latency_p95_ms=250)
    verdict = judge_canary(
        policy(), stats, measures(stats, baseline_accuracy=None, drift_share=None), timedelta(0)
    )
    assert verdict is not None
    assert verdict.healthy


def test_accuracy_without_feedback_is_not_measured_and_does_not_degrade() -> None:
    stats = TrafficStats(count=100, latency_p95_ms=1)
    observed = measures(stats, baseline_accuracy=0.99, drift_share=None)
    assert observed["accuracy"] is None
    assert observed["accuracy_drop"] is None
    verdict = judge_canary(policy(), stats, observed, timedelta(0))
    assert verdict is not None
    assert verdict.healthy
    drop = next(e for e in verdict.evidence if e.metric == "accuracy_drop")
    assert drop.observed is None
    assert drop.satisfied is False


def test_a_starved_canary_is_degraded_when_max_duration_passes() -> None:
    stats = TrafficStats(count=10, latency_p95_ms=1)
    observed = measures(stats, baseline_accuracy=None, drift_share=None)
    verdict = judge_canary(policy(), stats, observed, timedelta(minutes=30))
    assert verdict is not None
    assert not verdict.healthy
    assert verdict.evidence[0].metric == "predictions"
    assert verdict.evidence[0].satisfied


def test_drift_share_is_a_limit_when_configured() -> None:
    stats = TrafficStats(count=100, latency_p95_ms=1)
    observed = measures(stats, baseline_accuracy=None, drift_share=0.6)
    verdict = judge_canary(policy(drift_share=">= 0.5"), stats, observed, timedelta(0))
    assert verdict is not None
    assert not verdict.healthy


def test_production_windows_are_judged_by_the_same_limits() -> None:
    bad = TrafficStats(count=100, errors=20, latency_p95_ms=1)
    good = TrafficStats(count=100, errors=0, latency_p95_ms=1)
    none = {"baseline_accuracy": None, "drift_share": None}
    assert not judge_production_window(policy(), measures(bad, **none)).healthy  # type: ignore[arg-type]
    assert judge_production_window(policy(), measures(good, **none)).healthy  # type: ignore[arg-type]
    assert production_windows_due(served=250, window=100, next_seq=1) == [1, 2]
    assert production_windows_due(served=250, window=100, next_seq=3) == []
    assert production_windows_due(served=300, window=100, next_seq=3) == [3]


def test_unknown_degrade_if_metrics_are_reported() -> None:
    assert unknown_limits(policy(error_rate="> 0.1")) == []
    assert unknown_limits(policy(eror_rate="> 0.1")) == ["eror_rate"]


def test_a_window_already_past_a_lowered_size_closes_at_once() -> None:
    # window_size lowered from 1000 to 100 by a config change while 500 rows were open
    open_ = OpenWindow(seq=2, size=500, started_at=T0, ended_at=T0)
    segments, state = split_windows(open_, stamps(1, 2, 3), size=100, max_age=HOUR)
    assert [(s.seq, s.start, s.stop, s.closes) for s in segments] == [
        (2, 0, 0, True),
        (3, 0, 3, False),
    ]
    assert state.seq == 3
    assert state.size == 3


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
            st.integers(-18 * 60, 18 * 60),  # RFC 3339 offsets: whole minutes
        ),
        min_size=1,
        max_size=50,
    )
)
def test_datetimes_become_exact_microseconds_in_every_year(
    moments: list[tuple[datetime, int]],
) -> None:
    values = [
        naive.replace(tzinfo=UTC).astimezone(timezone(timedelta(minutes=offset)))
        for naive, offset in moments
    ]
    exact = [(v - EPOCH) // timedelta(microseconds=1) for v in values]
    assert to_datetime64(values).astype(np.int64).tolist() == exact


def test_the_row_that_closed_a_window_is_its_cause() -> None:
    # By count: the window's last row. By age: the row that came max_age after its first.
    segments, _ = split_windows(OpenWindow(seq=1), stamps(*range(12)), size=5, max_age=HOUR)
    assert [(s.seq, s.closer) for s in segments] == [(1, 4), (2, 9), (3, None)]
    open_ = OpenWindow(seq=1, size=2, started_at=T0, ended_at=T0)
    segments, _ = split_windows(open_, stamps(10, 3600, 3601), size=100, max_age=HOUR)
    assert [(s.seq, s.closer) for s in segments] == [(1, 1), (2, None)]
    segments, _ = split_windows(open_, stamps(7200), size=100, max_age=HOUR)
    assert [(s.seq, s.closer) for s in segments] == [(1, 0), (2, None)]
    lowered = OpenWindow(seq=2, size=500, started_at=T0, ended_at=T0)
    segments, _ = split_windows(lowered, stamps(1, 2), size=100, max_age=HOUR)
    assert [(s.seq, s.closer) for s in segments] == [(2, 0), (3, None)]


def test_live_accuracy_counts_agreement_under_the_models_target() -> None:
    mapped = Target(type="integer", mapping={True: 1, False: 0})
    keys = [mapped.key(v) for v in (True, False, True, True)]
    labels = [mapped.key(v) for v in (1, 0, 0, 1)]
    stats = traffic_stats_of(
        mapped, count=5, errors=1, latency_p95_ms=3.0, predictions=keys, labels=labels
    )
    assert (stats.labelled, stats.correct, stats.accuracy) == (4, 3, 0.75)
    regression = Target(kind="regression", tolerance=1.0)
    stats = traffic_stats_of(
        regression,
        count=2,
        errors=0,
        latency_p95_ms=None,
        predictions=[regression.key(10.0), regression.key(20.0)],
        labels=[regression.key(10.9), regression.key(22.0)],
    )
    assert stats.accuracy == 0.5


def test_a_value_that_does_not_fit_the_target_is_refused_with_where_it_is_declared() -> None:
    assert TARGET_MISMATCH == "target_mismatch"
    target = Target(type="integer", mapping={True: 1, False: 0})
    assert misfit(target, "churn", "label of request r1:", True) is None
    why = misfit(target, "churn", "label of request r1:", "yes")
    assert why == (
        'label of request r1: "yes" is not an integer '
        "(models.churn.target: classification, type integer, mapping true, false)"
    )
    assert misfit(DEFAULT_TARGET, "churn", "prediction:", "anything") is None
