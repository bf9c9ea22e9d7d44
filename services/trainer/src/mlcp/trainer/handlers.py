"""Event handlers of the trainer (thin: event → domain decision → store + outbox).

Each runs inside the runtime's inbox transaction, so the ledger row, the trigger state and the
TrainingRequested outbox row commit together or not at all.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel

from mlcp.contracts import (
    CloudEvent,
    DataArrived,
    DriftDetected,
    ModelPromoted,
    ModelRolledBack,
    ModelVersionRegistered,
    RunFailed,
    TrainingRequested,
    encode_event,
)
from mlcp.contracts.types import MAX_TRIGGERS
from mlcp.policy.platform import ModelConfig, PlatformConfig
from mlcp.runtime import Settings, Tx
from mlcp.runtime.db import Conn
from mlcp.runtime.telemetry import current_traceparent
from mlcp.trainer import domain, store
from mlcp.trainer.batches import local_path, reachable_sha256


def run_id_for(request_id: str) -> str:
    """The run of a TrainingRequested: one per request id, so a redelivery finds it."""
    return f"run-{request_id}"


class TrainerHandlers:
    """The trainer's subscribers, bound to the platform config."""

    def __init__(
        self,
        config: PlatformConfig,
        *,
        service: str,
        settings: Settings,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self._service = service
        self._settings = settings
        self.duplicates = Counter(
            "mlcp_trainer_duplicate_batches_total",
            "DataArrived whose content (dataset, sha256) was already in the ledger: recorded as "
            "re-announcements, not counted again.",
            ["dataset"],
            registry=registry,
        )

    def _model(self, name: str) -> ModelConfig:
        try:
            return self.config.model(name)
        except KeyError as exc:
            raise domain.UnknownModel(exc.args[0]) from None

    async def on_data_arrived(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Add the batch to its dataset's ledger; request a retrain where a threshold is crossed."""
        await self.on_data_arrived_batch([event], tx)

    async def on_data_arrived_batch(self, events: list[CloudEvent[Any]], tx: Tx) -> None:
        """DataArrived in bulk (one transaction per Kafka batch), applied in order.

        Per dataset: lock its head, then its models' trigger states; walk the events in order,
        accepting new batches, refusing mismatching ones, and requesting a retrain at each
        crossing; write the ledger rows and the new head once.
        """
        actual: dict[str, str | None] = {}
        for event in events:
            path = local_path(event.data.uri)
            # Hash off the event loop; None = not a local file (verified at training instead).
            exists = path is not None and path.is_file()
            actual[event.id] = (
                await asyncio.to_thread(reachable_sha256, event.data.uri) if exists else None
            )
        for dataset in sorted({e.data.dataset for e in events}):
            mine = [e for e in events if e.data.dataset == dataset]
            await self._apply_dataset(tx, dataset, mine, actual)

    async def _apply_dataset(
        self,
        tx: Tx,
        dataset: str,
        events: list[CloudEvent[Any]],
        actual: dict[str, str | None],
    ) -> None:
        # The decisions are taken in memory, in event order, under the locks; what they write
        # (ledger + head, outbox rows, requests + counters) goes out in one statement each, so
        # a batch costs the same round trips whether it crosses the threshold zero or 40 times.
        conn = tx.conn
        head = await store.lock_dataset(conn, dataset)
        committed_seq = head.last_seq  # ledger positions up to here are in the table
        known = await store.known_batches(
            conn, dataset, [e.data.batch_id for e in events], [e.data.sha256 for e in events]
        )
        models = self.config.models_fed_by(dataset)
        triggers = {m: await store.lock_trigger(conn, m, dataset) for m in models}
        accepted: list[store.LedgerEntry] = []
        duplicates: list[store.Duplicate] = []
        outgoing: list[tuple[BaseModel, CloudEvent[Any] | None]] = []
        decided: list[tuple[int, TrainingRequested, store.DatasetState, CloudEvent[Any]]] = []
        for event in events:
            data: DataArrived = event.data
            digest = actual[event.id]
            verdict = domain.admit_batch(
                batch_id=data.batch_id,
                sha256=data.sha256,
                actual=digest,
                ids=known.by_id,
                contents=known.by_content,
            )
            if verdict == "conflict":
                reason = f"batch id already in the ledger with sha256 {known.by_id[data.batch_id]}"
                await store.record_rejected(
                    conn, data, event_id=event.id, actual=digest, reason=reason
                )
                continue
            if verdict == "duplicate":
                of_batch, of_seq = known.by_content[data.sha256]
                duplicates.append(store.Duplicate(event.id, data, of_batch, of_seq))
                continue
            if verdict == "mismatch":
                assert digest is not None
                await self._reject(conn, event, digest, models, outgoing)
                continue
            head = store.DatasetState(dataset, head.last_seq + 1, head.total_rows + data.rows)
            known.by_id[data.batch_id] = data.sha256
            known.by_content[data.sha256] = (data.batch_id, head.last_seq)
            accepted.append(
                store.LedgerEntry(
                    event.id, data, head.last_seq, head.total_rows, digest is not None
                )
            )
            for model in models:
                state = triggers[model]
                request = domain.threshold_request(
                    model=model,
                    dataset=dataset,
                    rows_since_last_run=head.total_rows - state.consumed_rows,
                    threshold=self._model(model).retrain.min_new_rows,
                )
                if request is None:
                    continue
                ids = [e.event_id for e in accepted if e.seq > state.consumed_seq]
                if state.consumed_seq < committed_seq:  # the crossing covers earlier batches
                    older = await store.event_ids_after(
                        conn, dataset, state.consumed_seq, MAX_TRIGGERS
                    )
                    ids = older + ids
                request = request.model_copy(update={"trigger_event_ids": tuple(ids)})
                decided.append((len(outgoing), request, head, event))
                outgoing.append((request, event))
                triggers[model] = replace(
                    state, consumed_seq=head.last_seq, consumed_rows=head.total_rows
                )
        await store.append_ledger(conn, head, accepted)
        await store.record_duplicates(conn, duplicates)
        if duplicates:
            self.duplicates.labels(dataset).inc(len(duplicates))
        emitted = await tx.emit_many(outgoing)
        await store.record_requests(
            conn,
            [
                store.RequestRecord(emitted[i].id, request, covered, cause.time)
                for i, request, covered, cause in decided
            ],
        )

    async def _reject(
        self,
        conn: Conn,
        event: CloudEvent[Any],
        actual: str,
        models: list[str],
        outgoing: list[tuple[BaseModel, CloudEvent[Any] | None]],
    ) -> None:
        data: DataArrived = event.data
        reason = (
            f"batch {data.batch_id} of dataset {data.dataset} rejected: sha256 mismatch: "
            f"DataArrived declares {data.sha256}, the file at {data.uri} has {actual}"
        )
        await store.record_rejected(conn, data, event_id=event.id, actual=actual, reason=reason)
        for model in models:
            outgoing.append(
                (
                    RunFailed(
                        run_id=f"rejected-batch:{event.id}",
                        model=model,
                        reason="data_threshold",
                        stage="verify_data",
                        error=reason,
                        error_type="ChecksumMismatch",
                    ),
                    event,
                )
            )

    async def _request(
        self,
        tx: Tx,
        request: TrainingRequested,
        head: store.DatasetState,
        cause: CloudEvent[Any] | None,
    ) -> str:
        emitted = await tx.emit(request)
        await store.record_request(
            tx.conn,
            request_id=emitted.id,
            request=request,
            dataset=head,
            requested_at=cause.time if cause is not None else emitted.time,
        )
        return emitted.id

    async def on_drift_detected(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Request a drift retrain unless the model's cool-down absorbs it."""
        drift: DriftDetected = event.data
        cfg = self._model(drift.model)
        head = await store.lock_dataset(tx.conn, cfg.dataset)
        state = await store.lock_trigger(tx.conn, drift.model, cfg.dataset)
        request = domain.drift_request(
            model=drift.model,
            dataset=cfg.dataset,
            detected_at=event.time,
            last_drift_request_at=state.last_drift_request_at,
            cooldown=cfg.retrain.drift_cooldown,
            trigger_event_id=event.id,
        )
        if request is None:
            await store.count_suppressed_drift(tx.conn, drift.model)
            return
        await self._request(tx, request, head, event)

    async def on_training_requested(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Queue the run of a request (the worker trains it); one run per request id."""
        await self.on_training_requested_batch([event], tx)

    async def on_training_requested_batch(self, events: list[CloudEvent[Any]], tx: Tx) -> None:
        """Queue the runs of requests, a Kafka batch in one transaction and a few statements
        (the trainer's own requests come back at up to one per threshold crossing)."""
        decided = await store.decided_requests(tx.conn, [e.id for e in events])
        configs = {e.id: self._model(e.data.model) for e in events}
        # A request decided elsewhere (the CLI publishing directly, another tool) covers the
        # ledger as it is now and restarts the model's counter. It takes its dataset's lock, so
        # those go in dataset order like every other transaction (no lock-order deadlock), and
        # the run keeps the trace of the consumption (the request has no outbox row here).
        foreign = [e for e in events if e.id not in decided]
        for event in sorted(foreign, key=lambda e: configs[e.id].dataset):
            request: TrainingRequested = event.data
            dataset = configs[event.id].dataset
            head = await store.lock_dataset(tx.conn, dataset)
            await store.lock_trigger(tx.conn, request.model, dataset)
            await store.record_request(
                tx.conn, request_id=event.id, request=request, dataset=head, requested_at=event.time
            )
            decided[event.id] = (head.last_seq, current_traceparent())
        runs = [
            store.QueuedRun(
                run_id=run_id_for(e.id),
                request_id=e.id,
                request_event=encode_event(e),
                request=e.data,
                dataset=configs[e.id].dataset,
                ledger_seq=decided[e.id][0],
                traceparent=decided[e.id][1],
            )
            for e in events
        ]
        await store.insert_runs(tx.conn, runs)

    async def on_model_registered(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Remember the version's artifact, to score it as the baseline while it serves."""
        data: ModelVersionRegistered = event.data
        await store.record_version(
            tx.conn,
            model=data.model,
            version=data.version,
            run_id=data.run_id,
            uri=data.artifact.uri,
            sha256=data.artifact.sha256,
            fmt=data.artifact.format,
        )

    async def on_model_promoted(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Follow the production alias."""
        data: ModelPromoted = event.data
        current = await store.production_version(tx.conn, data.model)
        after = domain.production_after_promotion(current, data)
        if after != current:
            await store.set_production(tx.conn, data.model, after, event.id)

    async def on_model_rolled_back(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Follow the production alias back."""
        data: ModelRolledBack = event.data
        current = await store.production_version(tx.conn, data.model)
        after = domain.production_after_rollback(current, data)
        if after != current:
            await store.set_production(tx.conn, data.model, after, event.id)

    async def request_manual(self, tx: Tx, model: str, *, requested_by: str) -> str:
        """Manual trigger: emit TrainingRequested(reason=manual); returns the request id."""
        cfg = self._model(model)
        head = await store.lock_dataset(tx.conn, cfg.dataset)
        await store.lock_trigger(tx.conn, model, cfg.dataset)
        request = TrainingRequested(
            model=model, reason="manual", dataset=cfg.dataset, requested_by=requested_by
        )
        return await self._request(tx, request, head, None)
