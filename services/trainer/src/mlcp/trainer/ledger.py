"""Pure decisions of the ledger and the retraining triggers.

What a batch of DataArrived does to its dataset's ledger (accepted, duplicate, refused), when a
model's new rows cross its threshold, when a drift or a manual request is made, and which
events each of those decisions emits. No Kafka, no SQL, no clock: the handler loads the state
under its locks, calls these functions, saves what they return and emits their events.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from mlcp.contracts import CloudEvent, DataArrived, RunFailed, TrainingRequested
from mlcp.contracts.types import MAX_TRIGGERS


@dataclass(frozen=True)
class DatasetHead:
    """A dataset's ledger head: the last position written and the rows counted up to it."""

    dataset: str
    last_seq: int
    total_rows: int


@dataclass(frozen=True)
class TriggerState:
    """A model's trigger: the ledger position and rows its last request covered."""

    model: str
    dataset: str
    consumed_seq: int
    consumed_rows: int
    last_drift_request_at: datetime | None


@dataclass(frozen=True)
class KnownBatches:
    """What a dataset's ledger already holds of some announced batches."""

    by_id: Mapping[str, str]
    """batch_id → the sha256 it was accepted with."""
    by_content: Mapping[str, tuple[str, int]]
    """sha256 → (batch_id, seq) of the ledger batch holding that content (the first one)."""


@dataclass(frozen=True)
class LedgerBatch:
    """One accepted batch of the ledger, as a run trains on it."""

    seq: int
    batch_id: str
    uri: str
    rows: int
    sha256: str
    completeness: float
    format: str | None
    duplicates: int = 0
    """Announcements of the same content the ledger did not count again."""


@dataclass(frozen=True)
class LedgerEntry:
    """A batch accepted into the ledger at position ``seq`` (``verified``: its file was hashed)."""

    event_id: str
    data: DataArrived
    seq: int
    cum_rows: int
    verified: bool


@dataclass(frozen=True)
class Duplicate:
    """An announcement of content the ledger already holds (batch ``of_batch_id``)."""

    event_id: str
    data: DataArrived
    of_batch_id: str
    of_seq: int


@dataclass(frozen=True)
class Rejection:
    """A refused announcement (the ledger is not touched); ``actual``: the file's digest."""

    event_id: str
    data: DataArrived
    actual: str | None
    reason: str


@dataclass(frozen=True)
class RequestRecord:
    """A request this trainer decided, covering its dataset's ledger up to ``dataset``."""

    request_id: str
    request: TrainingRequested
    dataset: DatasetHead
    requested_at: datetime


@dataclass(frozen=True)
class Emit:
    """An event a decision emits, with the event that caused it.

    A TrainingRequested of a threshold crossing also carries the ledger head it ``covers`` and,
    when it covers batches committed before this Kafka batch, ``older_after``: the ledger
    position after which their DataArrived ids belong to its ``trigger_event_ids`` (the handler
    reads them, ``with_trigger_ids`` puts them in).
    """

    data: TrainingRequested | RunFailed
    cause: CloudEvent[Any]
    covers: DatasetHead | None = None
    older_after: int | None = None


@dataclass(frozen=True)
class LedgerStep:
    """What a Kafka batch of DataArrived does to one dataset: the rows to write and the events
    to emit, in event order."""

    head: DatasetHead
    accepted: tuple[LedgerEntry, ...]
    duplicates: tuple[Duplicate, ...]
    rejected: tuple[Rejection, ...]
    emits: tuple[Emit, ...]

    def older_ids_after(self) -> int | None:
        """The lowest ledger position after which committed batches' ids are needed (None:
        no crossing covers batches committed before this Kafka batch)."""
        positions = [e.older_after for e in self.emits if e.older_after is not None]
        return min(positions) if positions else None


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


def mismatch_reason(event: CloudEvent[Any], actual: str) -> str:
    """Why a batch whose file has another digest than announced is refused."""
    data: DataArrived = event.data
    return (
        f"batch {data.batch_id} of dataset {data.dataset} rejected: sha256 mismatch: "
        f"DataArrived declares {data.sha256}, the file at {data.uri} has {actual}"
    )


def checksum_failure(model: str, event: CloudEvent[Any], reason: str) -> RunFailed:
    """The RunFailed that tells ``model``'s owners a batch of its data was refused (no run
    exists: its id names the DataArrived)."""
    return RunFailed(
        run_id=f"rejected-batch:{event.id}",
        model=model,
        reason="data_threshold",
        stage="verify_data",
        error=reason,
        error_type="ChecksumMismatch",
    )


def apply_batches(
    *,
    head: DatasetHead,
    known: KnownBatches,
    triggers: Mapping[str, TriggerState],
    thresholds: Mapping[str, int],
    events: Sequence[CloudEvent[Any]],
    digests: Mapping[str, str | None],
) -> LedgerStep:
    """Walk a dataset's DataArrived in order: accept new content, record duplicates, refuse
    conflicts and mismatches, and request a retrain of each model (``thresholds``: the models
    fed by the dataset, in order, with their ``min_new_rows``) at each crossing.

    ``head``, ``known`` and ``triggers`` are the committed state read under the dataset's and
    the models' locks; ``digests`` maps an event id to the sha256 of its file when reachable.
    A crossing resets the model's counter to the head it covers, so one crossing gives exactly
    one request, and its ``trigger_event_ids`` are the DataArrived ids of the rows it covers.
    """
    committed_seq = head.last_seq  # ledger positions up to here are already in the table
    by_id = dict(known.by_id)
    by_content = dict(known.by_content)
    states = dict(triggers)
    accepted: list[LedgerEntry] = []
    duplicates: list[Duplicate] = []
    rejected: list[Rejection] = []
    emits: list[Emit] = []
    for event in events:
        data: DataArrived = event.data
        digest = digests.get(event.id)
        verdict = admit_batch(
            batch_id=data.batch_id,
            sha256=data.sha256,
            actual=digest,
            ids=by_id,
            contents=by_content,
        )
        if verdict == "conflict":
            reason = f"batch id already in the ledger with sha256 {by_id[data.batch_id]}"
            rejected.append(Rejection(event.id, data, digest, reason))
            continue
        if verdict == "duplicate":
            of_batch, of_seq = by_content[data.sha256]
            duplicates.append(Duplicate(event.id, data, of_batch, of_seq))
            continue
        if verdict == "mismatch":
            assert digest is not None
            reason = mismatch_reason(event, digest)
            rejected.append(Rejection(event.id, data, digest, reason))
            emits += [Emit(checksum_failure(model, event, reason), event) for model in thresholds]
            continue
        head = DatasetHead(head.dataset, head.last_seq + 1, head.total_rows + data.rows)
        by_id[data.batch_id] = data.sha256
        by_content[data.sha256] = (data.batch_id, head.last_seq)
        accepted.append(
            LedgerEntry(event.id, data, head.last_seq, head.total_rows, digest is not None)
        )
        for model, threshold in thresholds.items():
            state = states[model]
            ids = [e.event_id for e in accepted if e.seq > state.consumed_seq]
            request = threshold_request(
                model=model,
                dataset=head.dataset,
                rows_since_last_run=head.total_rows - state.consumed_rows,
                threshold=threshold,
                trigger_event_ids=ids,
            )
            if request is None:
                continue
            # The crossing covers earlier batches too: their ids are read by the handler.
            older = state.consumed_seq if state.consumed_seq < committed_seq else None
            emits.append(Emit(request, event, covers=head, older_after=older))
            states[model] = replace(
                state, consumed_seq=head.last_seq, consumed_rows=head.total_rows
            )
    return LedgerStep(head, tuple(accepted), tuple(duplicates), tuple(rejected), tuple(emits))


def with_trigger_ids(emits: Sequence[Emit], older: Sequence[tuple[int, str]]) -> list[Emit]:
    """``emits`` with the ids of committed batches (``older``: (seq, DataArrived id) of the most
    recent ones after ``LedgerStep.older_ids_after``, in ledger order) put in front of each
    crossing's own, keeping the most recent ``MAX_TRIGGERS``."""
    out = []
    for emit in emits:
        request = emit.data
        if emit.older_after is not None and isinstance(request, TrainingRequested):
            ids = [event_id for seq, event_id in older if seq > emit.older_after]
            ids += request.trigger_event_ids
            request = request.model_copy(update={"trigger_event_ids": tuple(ids[-MAX_TRIGGERS:])})
            emit = replace(emit, data=request)
        out.append(emit)
    return out


def undecided_requests(
    events: Sequence[CloudEvent[Any]],
    decided: Container[str],
    dataset_of: Mapping[str, str],
) -> list[CloudEvent[Any]]:
    """The TrainingRequested among ``events`` that this trainer did not decide (the CLI, another
    tool), in dataset order: recording one takes its dataset's lock, and every transaction
    takes dataset locks in name order (no lock-order deadlock)."""
    return sorted((e for e in events if e.id not in decided), key=lambda e: dataset_of[e.id])


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


def manual_request(*, model: str, dataset: str, requested_by: str) -> TrainingRequested:
    """A person's (or a tool's) request to retrain ``model`` now."""
    return TrainingRequested(
        model=model, reason="manual", dataset=dataset, requested_by=requested_by
    )
