"""Pure decisions of the trainer: when to retrain, what production is, what to do with a run.

No Kafka, no SQL, no clock: callers pass the facts (row counts, timestamps, attempts) and get a
decision back (an event to emit, or nothing).
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from mlcp.contracts import ModelPromoted, ModelRolledBack, TrainingRequested
from mlcp.contracts.types import MAX_TRIGGERS

PRODUCTION = "production"


class UnknownModel(LookupError):
    """An event names a model the platform config does not declare."""


BatchVerdict = Literal["accept", "duplicate", "conflict", "mismatch"]


def admit_batch(
    *,
    batch_id: str,
    sha256: str,
    actual: str | None,
    ids: Mapping[str, str],
    contents: Container[str],
) -> BatchVerdict:
    """What the ledger does with an announced batch. A batch is its content (dataset, sha256):

    * ``conflict``: its id is in the ledger with other content — refused (a producer bug);
    * ``duplicate``: its content is in the ledger, under this id or another — recorded as a
      re-announcement, never counted again (the usual retry of a pipeline);
    * ``mismatch``: the file at its URI (when reachable: ``actual``) has another digest than
      announced — refused;
    * ``accept``: new content, counted.

    ``ids`` maps the ledger's batch ids to their sha256, ``contents`` holds its sha256 values.
    """
    if ids.get(batch_id, sha256) != sha256:
        return "conflict"
    if sha256 in contents:
        return "duplicate"
    if actual is not None and actual != sha256:
        return "mismatch"
    return "accept"


def threshold_request(
    *,
    model: str,
    dataset: str,
    rows_since_last_run: int,
    threshold: int,
    trigger_event_ids: Sequence[str] = (),
) -> TrainingRequested | None:
    """A data_threshold request when the model's new rows reached its threshold, else None.

    The caller resets the model's counter when it emits the request, so one crossing gives
    exactly one request (the rows that crossed it are covered by that run).
    """
    if threshold < 1:
        raise ValueError("threshold must be ≥ 1")
    if rows_since_last_run < threshold:
        return None
    return TrainingRequested(
        model=model,
        reason="data_threshold",
        dataset=dataset,
        rows_since_last_run=rows_since_last_run,
        threshold=threshold,
        # The contract bounds this list; the most recent ids are the most useful to trace.
        trigger_event_ids=tuple(trigger_event_ids)[-MAX_TRIGGERS:],
    )


def drift_request(
    *,
    model: str,
    dataset: str,
    detected_at: datetime,
    last_drift_request_at: datetime | None,
    cooldown: timedelta,
    trigger_event_id: str,
) -> TrainingRequested | None:
    """A drift request unless another drift request was made less than ``cooldown`` ago.

    ``detected_at`` is the DriftDetected event's time, so that a replayed storm is judged by
    when it happened, not by when it was read again.
    """
    if last_drift_request_at is not None and detected_at - last_drift_request_at < cooldown:
        return None
    return TrainingRequested(
        model=model,
        reason="drift",
        dataset=dataset,
        trigger_event_ids=(trigger_event_id,),
    )


def production_after_promotion(current: str | None, event: ModelPromoted) -> str | None:
    """The production version once ``event`` is applied (only the production alias counts)."""
    return event.version if event.alias == PRODUCTION else current


def production_after_rollback(current: str | None, event: ModelRolledBack) -> str | None:
    """The production version once ``event`` is applied (the alias goes to ``to_version``)."""
    if event.alias != PRODUCTION:
        return current
    return event.to_version


ClaimAction = Literal["start", "give_up"]


def claim_action(attempt: int, max_attempts: int) -> ClaimAction:
    """What a worker does with a run it claims for the ``attempt``-th time.

    A run is claimed again only when the worker holding it vanished (its lease expired: a
    ``kill -9``, an OOM kill, a lost host). After ``max_attempts`` such losses the run is marked
    failed instead of being retried forever.
    """
    return "start" if attempt <= max_attempts else "give_up"


@dataclass(frozen=True)
class ChildOutcome:
    """How the training child process ended, as the worker saw it."""

    exitcode: int | None
    timed_out: bool
    has_result: bool
    stderr: str = ""
    """The tail of the child's standard error (a crash's traceback or message)."""


def child_failure(outcome: ChildOutcome, timeout_s: float) -> str | None:
    """Why a training child produced no result (None when it did)."""
    if outcome.timed_out:
        return f"training did not finish within {timeout_s:g}s and was killed"
    if outcome.has_result:
        return None
    code = outcome.exitcode
    if code is not None and code < 0:
        why = f"training process died with signal {-code}"
    else:
        why = f"training process exited with code {code} without a result"
    return f"{why}: {outcome.stderr[-2000:]}" if outcome.stderr else why
