"""Pure decisions of a run's life: its id, what a worker does with a claim, and how a training
child's outcome becomes RunFinished or RunFailed.

No Kafka, no SQL, no clock, no process: the worker passes the facts (attempt, how the child
ended, what it wrote) and gets back the event to emit and what to record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from mlcp.contracts import CloudEvent, RunFailed, RunFinished, TrainingRequested, encode_event
from mlcp.contracts.common import ArtifactRef, Baseline, DatasetRef, Environment, FeatureSpec
from mlcp.contracts.profile import ReferenceProfile
from mlcp.contracts.types import MAX_ERROR_LENGTH


def run_id_for(request_id: str) -> str:
    """The run of a TrainingRequested: one per request id, so a redelivery finds it."""
    return f"run-{request_id}"


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


@dataclass(frozen=True)
class DecidedRequest:
    """A request as its decision recorded it: the ledger position it covers, and the trace
    context its TrainingRequested was emitted with."""

    ledger_seq: int
    traceparent: str | None


def queue_run(event: CloudEvent[Any], dataset: str, decided: DecidedRequest) -> QueuedRun:
    """The run that trains the request ``event`` over its dataset's ledger up to the position
    its decision covered."""
    return QueuedRun(
        run_id=run_id_for(event.id),
        request_id=event.id,
        request_event=encode_event(event),
        request=event.data,
        dataset=dataset,
        ledger_seq=decided.ledger_seq,
        traceparent=decided.traceparent,
    )


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


ClaimAction = Literal["start", "give_up"]


def claim_action(attempt: int, max_attempts: int) -> ClaimAction:
    """What a worker does with a run it claims for the ``attempt``-th time.

    A run is claimed again only when the worker holding it vanished (its lease expired: a
    ``kill -9``, an OOM kill, a lost host). After ``max_attempts`` such losses the run is marked
    failed instead of being retried forever.
    """
    return "start" if attempt <= max_attempts else "give_up"


def error_text(text: str) -> str:
    """An error as the contract bounds it: never blank, its most recent part kept."""
    text = text.strip() or "unknown error"
    return text[-MAX_ERROR_LENGTH:]


def run_failed(run: ClaimedRun, stage: str, error: str, error_type: str | None) -> RunFailed:
    """The RunFailed of ``run`` at ``stage``."""
    return RunFailed(
        run_id=run.run_id,
        model=run.model,
        reason=run.reason,
        stage=stage,
        error=error_text(error),
        error_type=error_type,
    )


def given_up(run: ClaimedRun, max_attempts: int) -> RunFailed:
    """The RunFailed of a run whose workers vanished too often."""
    error = f"the worker running it vanished {run.attempt - 1} times (max_attempts={max_attempts})"
    return run_failed(run, "worker", error, "WorkerLost")


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


@dataclass(frozen=True)
class TrainedBatch:
    """A batch a run trained on, in ledger order."""

    dataset: str
    batch_id: str
    sha256: str
    rows: int


@dataclass(frozen=True)
class StoredFile:
    """A run's artifact as written: where, its digest, format and size."""

    uri: str
    sha256: str
    format: str
    size_bytes: int


@dataclass(frozen=True)
class RunResult:
    """What a finished run records in the tracking tables: the training child's JSON, typed.
    JSON documents (environment, feature schema, target, baseline, profile) stay documents."""

    params: dict[str, Any]
    seed: int
    metrics: dict[str, float]
    baseline: dict[str, Any] | None
    batches: tuple[TrainedBatch, ...]
    feature_schema: list[dict[str, Any]]
    label: str
    target: dict[str, Any]
    reference_profile: dict[str, Any]
    artifact: StoredFile
    entrypoint: str
    code_version: str
    environment: dict[str, Any]
    duration_s: float

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> RunResult:
        """The result the child wrote (``training.run_job``'s return value)."""
        return cls(
            params=dict(body["params"]),
            seed=int(body["seed"]),
            metrics=dict(body["metrics"]),
            baseline=body["baseline"],
            batches=tuple(
                TrainedBatch(b["dataset"], b["batch_id"], b["sha256"], int(b["rows"]))
                for b in body["batches"]
            ),
            feature_schema=list(body["feature_schema"]),
            label=body["label"],
            target=body["target"],
            reference_profile=body["reference_profile"],
            artifact=StoredFile(**body["artifact"]),
            entrypoint=body["entrypoint"],
            code_version=body["code_version"],
            environment=body["environment"],
            duration_s=float(body["duration_s"]),
        )


def run_finished(run: ClaimedRun, body: dict[str, Any]) -> RunFinished:
    """The RunFinished of ``run`` from the child's result (raises ValidationError when the
    result breaks the contract)."""
    baseline = body["baseline"]
    return RunFinished(
        run_id=run.run_id,
        model=run.model,
        reason=run.reason,
        params=body["params"],
        metrics=body["metrics"],
        baseline=None if baseline is None else Baseline.model_validate(baseline),
        datasets=tuple(DatasetRef.model_validate(d) for d in body["datasets"]),
        feature_schema=tuple(FeatureSpec.model_validate(f) for f in body["feature_schema"]),
        label=body["label"],
        artifact=ArtifactRef.model_validate(body["artifact"]),
        reference_profile=ReferenceProfile.model_validate(body["reference_profile"]),
        code_version=body["code_version"],
        entrypoint=body["entrypoint"],
        environment=Environment.model_validate(body["environment"]),
        duration_s=body["duration_s"],
    )


@dataclass(frozen=True)
class Finished:
    """The run produced a candidate: emit ``event``, record ``result``."""

    event: RunFinished
    result: RunResult
    baseline_error: str | None = None
    """Why the production version was not scored (a champion refused by the loader is a
    security signal: the worker logs it)."""


@dataclass(frozen=True)
class Failed:
    """The run failed: record its stage and error, emit ``event``."""

    event: RunFailed


def conclude(
    run: ClaimedRun,
    outcome: ChildOutcome,
    result: tuple[str, dict[str, Any]] | None,
    timeout_s: float,
) -> Finished | Failed:
    """What a run's training child's end means: a crash or a timeout (``outcome``), a stage
    that failed (``result`` status ``failed``), a result that breaks the RunFinished contract,
    or a candidate."""
    status, body = result if result is not None else ("failed", {})
    crash = child_failure(outcome, timeout_s)
    if crash is not None:
        error_type = "TrainingTimeout" if outcome.timed_out else "TrainingCrashed"
        return Failed(run_failed(run, "train", crash, error_type))
    if status != "ok":
        stage = body.get("stage", "train")
        return Failed(run_failed(run, stage, str(body.get("error", "")), body.get("error_type")))
    try:
        finished = run_finished(run, body)
    except ValidationError as exc:
        error = f"the run's output breaks the RunFinished contract: {exc}"
        return Failed(run_failed(run, "publish", error, "ValidationError"))
    return Finished(finished, RunResult.from_body(body), body.get("baseline_error"))
