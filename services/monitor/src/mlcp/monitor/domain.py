"""Pure decisions of the monitor: window boundaries, canary and rollback-window verdicts, and
which event (if any) a verdict is.

No Kafka, no SQL: functions take plain values (arrays, policies, measured statistics, the
state the stores hold as the dataclasses below) and return what to do. The handlers
(``ingest.py``, ``watch.py``) load, call these, save and emit.

The monitor's clock is its traffic: a decision is taken at the time of the prediction that
arrived (the batch's latest timestamp, read once per model and batch) or of the event that
moved an alias, never at the wall clock of the process, so a replay decides the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter

import numpy as np
import numpy.typing as npt

from mlcp.contracts import (
    CanaryHealthy,
    DriftDetected,
    Evidence,
    FeatureDrift,
    ModelDegraded,
    Window,
)
from mlcp.monitor.drift import DriftReport
from mlcp.policy.platform import RolloutPolicy, Threshold
from mlcp.policy.target import LabelMismatch, Target

# --- drift windows -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenWindow:
    """The window of a version currently filling up."""

    seq: int
    size: int = 0
    started_at: datetime | None = None  # ts of its first prediction
    ended_at: datetime | None = None  # ts of its latest prediction


@dataclass(frozen=True)
class Segment:
    """Rows ``start:stop`` of a batch that belong to window ``seq``."""

    seq: int
    start: int
    stop: int
    closes: bool
    """The window is complete after these rows (by count, or by age at the next row)."""
    window: OpenWindow
    """The window's state once these rows are added."""
    closer: int | None = None
    """The batch row whose arrival closed the window (its last row, or the row that came
    ``max_age`` after the window's first): the cause of the window's decision."""


def split_windows(
    state: OpenWindow,
    ts: npt.NDArray[np.datetime64],
    *,
    size: int,
    max_age: timedelta,
) -> tuple[list[Segment], OpenWindow]:
    """Cut a batch (in arrival order) into windows of at most ``size`` rows and ``max_age``.

    A window closes when it holds ``size`` rows, or when a row arrives ``max_age`` or more after
    the window's first row (that row opens the next window): closing is driven by traffic, not by
    a clock. Loops once per window touched, never per row. Returns the segments and the state
    of the window left open.
    """
    age = np.timedelta64(int(max_age.total_seconds() * 1_000_000), "us")
    segments: list[Segment] = []
    i, n = 0, len(ts)
    while i < n:
        first = state.started_at
        start64 = to_datetime64([first])[0] if first else ts[i]
        room = max(size - state.size, 0)  # ≤ 0 when window_size was lowered mid-window
        chunk = ts[i : i + room]
        late = np.flatnonzero(chunk - start64 >= age)
        stop = i + (int(late[0]) if late.size else len(chunk))
        if stop > i:
            state = OpenWindow(
                seq=state.seq,
                size=state.size + (stop - i),
                started_at=first or _to_dt(ts[i]),
                ended_at=_max_dt(state.ended_at, _to_dt(ts[i:stop].max())),
            )
        closes = state.size >= size or late.size > 0
        if stop > i or closes:
            closer = (stop if late.size else max(stop - 1, i)) if closes else None
            segments.append(Segment(state.seq, i, stop, closes, state, closer))
        if closes:
            state = OpenWindow(seq=state.seq + 1)
        i = stop
    return segments, state


@dataclass(frozen=True)
class Traffic:
    """A version's prediction count and open drift window."""

    served: int
    window: OpenWindow


def to_datetime64(values: Sequence[datetime]) -> npt.NDArray[np.datetime64]:
    """Aware datetimes (whole-second UTC offsets, as RFC 3339 has) → numpy microseconds since
    the epoch (UTC), exactly, for every year 1-9999."""
    n = len(values)
    # Two C calls per value instead of timedelta arithmetic: the POSIX time as a double is
    # within far less than half a second of the truth for every year, so it gives the whole
    # seconds, and the microseconds are taken exactly from the field.
    seconds = np.fromiter(map(datetime.timestamp, values), np.float64, count=n)
    micros = np.fromiter(map(_MICROSECOND, values), np.int64, count=n)
    whole = np.rint(seconds - micros / 1e6).astype(np.int64)
    return (whole * 1_000_000 + micros).astype("datetime64[us]")


_MICROSECOND = attrgetter("microsecond")


def _to_dt(value: np.datetime64) -> datetime:
    micros = value.astype("datetime64[us]").astype(np.int64)
    return EPOCH + timedelta(microseconds=int(micros))


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _max_dt(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


# --- drift verdicts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftDecision:
    """What a closed window decided: the record kept under its key, and the event to emit."""

    window_id: str
    record: dict[str, object]
    """The decision row's payload (the window, every test, the share): kept even when stable."""
    event: DriftDetected | None
    """DriftDetected when the window drifted; None for a stable window."""


def decide_drift(
    model: str,
    version: str,
    alias: str | None,
    window: OpenWindow,
    report: DriftReport,
) -> DriftDecision | None:
    """The decision of a closed drift window (None for a window with no rows or times)."""
    if window.started_at is None or window.ended_at is None or report.rows == 0:
        return None
    span = Window(start=window.started_at, end=window.ended_at, size=report.rows)
    record = {
        "window": span.model_dump(mode="json"),
        "share_drifted": report.share_drifted,
        "detected": report.detected,
        "tests": [t.__dict__ for t in report.tests],
    }
    event = None
    if report.detected:
        event = DriftDetected(
            model=model,
            version=version,
            alias=alias,
            features=tuple(
                FeatureDrift(
                    name=t.name,
                    method=t.method,
                    score=t.score,
                    threshold=t.threshold,
                    drifted=t.drifted,
                    statistic=t.statistic,
                )
                for t in report.tests
            ),
            window=span,
            share_drifted=report.share_drifted,
            share_threshold=report.share_threshold,
        )
    return DriftDecision(f"drift-{window.seq}", record, event)


# --- watches: a canary's bake, a production version's rollback window ---------------------------

CANARY, PRODUCTION = "canary", "production"
"""The aliases the monitor watches (the registry's names)."""


@dataclass(frozen=True)
class NewWatch:
    """A watch to open."""

    model: str
    version: str
    alias: str
    baseline_version: str | None
    started_at: datetime
    until: datetime | None
    served_from: int
    baseline_from: int | None


@dataclass(frozen=True)
class Watch(NewWatch):
    """An open watch, as stored."""

    id: int
    next_window: int = 1


def canary_watch(
    model: str, version: str, baseline: str | None, served: dict[str, int], at: datetime
) -> NewWatch:
    """The bake a canary promotion opens: against the production version ``baseline`` (none
    when the canary is production itself), counting from the predictions served by now."""
    baseline = baseline if baseline != version else None
    return NewWatch(
        model=model,
        version=version,
        alias=CANARY,
        baseline_version=baseline,
        started_at=at,
        until=None,
        served_from=served[version],
        baseline_from=served.get(baseline) if baseline else None,
    )


def production_watch(
    model: str,
    version: str,
    previous: str | None,
    served: int,
    at: datetime,
    policy: RolloutPolicy,
) -> NewWatch:
    """The rollback window a production promotion opens (``rollout.rollback_window`` long)."""
    return NewWatch(
        model=model,
        version=version,
        alias=PRODUCTION,
        baseline_version=previous,
        started_at=at,
        until=at + policy.rollback_window,
        served_from=served,
        baseline_from=None,
    )


def verdict_event(
    watch: Watch, verdict: Verdict, count: int, latest: datetime
) -> CanaryHealthy | ModelDegraded:
    """The event a watch's verdict emits: CanaryHealthy for a healthy verdict (only a bake
    ends healthy with an event), ModelDegraded otherwise; the window spans the watch."""
    span = Window(start=watch.started_at, end=max(latest, watch.started_at), size=count)
    evidence = tuple(verdict.evidence)
    if verdict.healthy:
        return CanaryHealthy(
            model=watch.model,
            version=watch.version,
            window=span,
            evidence=evidence,
            baseline_version=watch.baseline_version,
        )
    return ModelDegraded(
        model=watch.model,
        version=watch.version,
        alias=watch.alias,
        evidence=evidence,
        window=span,
        baseline_version=watch.baseline_version,
    )


def bake_over(watch: Watch, policy: RolloutPolicy, served: int, latest: datetime) -> bool:
    """Whether a canary's bake may be judged: it served ``bake.min_predictions`` since its
    promotion, or ``bake.max_duration`` passed (no statistics are queried before)."""
    enough = served - watch.served_from >= policy.bake.min_predictions
    return enough or latest - watch.started_at >= policy.bake.max_duration


# --- canary and rollback-window verdicts ---------------------------------------------------------

LIMIT_METRICS = ("error_rate", "latency_p95_ms", "accuracy", "accuracy_drop", "drift_share")
"""The keys ``rollout.degrade_if`` may use."""


def unknown_limits(policy: RolloutPolicy) -> list[str]:
    """degrade_if keys the monitor cannot measure (a configuration error)."""
    return sorted(set(policy.degrade_if) - set(LIMIT_METRICS))


@dataclass(frozen=True)
class TrafficStats:
    """What a version's predictions in a period measured."""

    count: int
    errors: int = 0
    latency_p95_ms: float | None = None
    labelled: int = 0
    correct: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.count if self.count else None

    @property
    def accuracy(self) -> float | None:
        """Live accuracy over the predictions that received feedback."""
        return self.correct / self.labelled if self.labelled else None


def traffic_stats_of(
    target: Target,
    *,
    count: int,
    errors: int,
    latency_p95_ms: float | None,
    predictions: list[str],
    labels: list[str],
) -> TrafficStats:
    """The stats of a period whose labelled predictions are these (prediction key, label key)
    pairs: correct as the model's target decides (the trainer's holdout uses the same rule)."""
    return TrafficStats(
        count=count,
        errors=errors,
        latency_p95_ms=latency_p95_ms,
        labelled=len(predictions),
        correct=target.correct(predictions, labels),
    )


def measures(
    subject: TrafficStats,
    *,
    baseline_accuracy: float | None,
    drift_share: float | None,
) -> dict[str, float | None]:
    """The values the degrade_if limits are compared with (None: not measurable)."""
    accuracy = subject.accuracy
    drop = None
    if accuracy is not None and baseline_accuracy is not None:
        drop = baseline_accuracy - accuracy
    return {
        "error_rate": subject.error_rate,
        "latency_p95_ms": subject.latency_p95_ms,
        "accuracy": accuracy,
        "accuracy_drop": drop,
        "drift_share": drift_share,
    }


def check_limits(limits: dict[str, Threshold], observed: dict[str, float | None]) -> list[Evidence]:
    """One Evidence per limit; ``satisfied`` = the degradation condition holds (limit crossed).

    A value that could not be measured (no feedback yet, no drift window) never crosses a limit.
    """
    return [
        Evidence.evaluate(name, observed.get(name), limit.operator, limit.value)
        for name, limit in sorted(limits.items())
    ]


@dataclass(frozen=True)
class Verdict:
    """A decision about a watched version."""

    healthy: bool
    evidence: list[Evidence]


def judge_canary(
    policy: RolloutPolicy,
    stats: TrafficStats,
    observed: dict[str, float | None],
    elapsed: timedelta,
) -> Verdict | None:
    """Healthy / degraded once the bake is over; None while it goes on.

    The bake is over when the canary served ``bake.min_predictions``; then any crossed limit
    means degraded. If ``bake.max_duration`` passes first, the canary did not get enough
    traffic to be judged: degraded (the safe side — production keeps serving).
    """
    if stats.count >= policy.bake.min_predictions:
        evidence = check_limits(policy.degrade_if, observed)
        return Verdict(not any(e.satisfied for e in evidence), evidence)
    if elapsed >= policy.bake.max_duration:
        starved = Evidence.evaluate(
            "predictions", float(stats.count), "<", float(policy.bake.min_predictions)
        )
        return Verdict(False, [starved, *check_limits(policy.degrade_if, observed)])
    return None


def judge_production_window(policy: RolloutPolicy, observed: dict[str, float | None]) -> Verdict:
    """A freshly promoted production version, one window of ``bake.min_predictions``."""
    evidence = check_limits(policy.degrade_if, observed)
    return Verdict(not any(e.satisfied for e in evidence), evidence)


def production_windows_due(served: int, window: int, next_seq: int) -> list[int]:
    """Watch windows (1-based) completed by ``served`` predictions, from ``next_seq`` on."""
    return list(range(next_seq, served // window + 1))


# --- predictions and labels under the model's target ---------------------------------------------

TARGET_MISMATCH = "target_mismatch"
"""The dead-letter reason of a prediction or a label that does not fit the model's target."""


def misfit(target: Target, model: str, what: str, value: object) -> str | None:
    """Why ``value`` (a prediction or a label) cannot be scored under the model's ``target``,
    naming the value, the declaration and where it is; None when it fits."""
    try:
        target.key(value)
    except LabelMismatch as exc:
        return f"{what} {exc} (models.{model}.target: {target.describe()})"
    return None


@dataclass(frozen=True)
class Lifecycle:
    """The lifecycle a version belongs to (kept from its registration): the monitor's verdicts
    about the version carry its correlation id and continue its trace."""

    correlation_id: str | None = None
    traceparent: str | None = None
