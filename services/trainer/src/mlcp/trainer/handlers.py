"""Event handlers of the trainer: load → decide (``ledger``, ``runs``, ``domain``) → save → emit.

Each runs inside the runtime's inbox transaction, so the ledger rows, the trigger state and the
TrainingRequested outbox rows commit together or not at all. The stores are given
(``stores.Stores``: PostgreSQL, or in-memory fakes in unit tests).
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from mlcp.contracts import (
    CloudEvent,
    DriftDetected,
    ModelPromoted,
    ModelRolledBack,
    ModelVersionRegistered,
    TrainingRequested,
)
from mlcp.contracts.types import MAX_TRIGGERS
from mlcp.policy.platform import ModelConfig, PlatformConfig
from mlcp.runtime import Tx
from mlcp.runtime.telemetry import current_traceparent
from mlcp.trainer import domain, ledger
from mlcp.trainer.batches import local_path, reachable_sha256
from mlcp.trainer.ledger import DatasetHead, RequestRecord
from mlcp.trainer.runs import DecidedRequest, queue_run
from mlcp.trainer.stores import Stores


class TrainerHandlers:
    """The trainer's subscribers and its manual trigger, bound to the platform config."""

    def __init__(
        self,
        config: PlatformConfig,
        *,
        stores: Stores | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.stores = stores or Stores()
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

    async def on_data_arrived(self, events: list[CloudEvent[Any]], tx: Tx) -> None:
        """DataArrived in bulk (one transaction per Kafka batch), applied in order: add each
        batch to its dataset's ledger, request a retrain where a threshold is crossed.

        Datasets go in name order (the lock order of every transaction); per dataset the
        decision is taken in memory under its locks and written once, so a Kafka batch costs
        the same round trips whether it crosses a threshold zero or 40 times.
        """
        digests: dict[str, str | None] = {}
        for event in events:
            # Hash off the event loop; None = not a local file (verified at training instead).
            path = local_path(event.data.uri)
            exists = path is not None and path.is_file()
            digests[event.id] = (
                await asyncio.to_thread(reachable_sha256, event.data.uri) if exists else None
            )
        for dataset in sorted({e.data.dataset for e in events}):
            mine = [e for e in events if e.data.dataset == dataset]
            await self._apply_dataset(tx, dataset, mine, digests)

    async def _apply_dataset(
        self,
        tx: Tx,
        dataset: str,
        events: list[CloudEvent[Any]],
        digests: dict[str, str | None],
    ) -> None:
        conn, store = tx.conn, self.stores
        head = await store.ledger.lock_dataset(conn, dataset)
        known = await store.ledger.known_batches(
            conn, dataset, [e.data.batch_id for e in events], [e.data.sha256 for e in events]
        )
        models = self.config.models_fed_by(dataset)
        triggers = {m: await store.triggers.lock_trigger(conn, m, dataset) for m in models}
        step = ledger.apply_batches(
            head=head,
            known=known,
            triggers=triggers,
            thresholds={m: self._model(m).retrain.min_new_rows for m in models},
            events=events,
            digests=digests,
        )
        after = step.older_ids_after()
        older = (
            []
            if after is None
            else await store.ledger.event_ids_after(conn, dataset, after, MAX_TRIGGERS)
        )
        emits = ledger.with_trigger_ids(step.emits, older)
        await store.ledger.append_ledger(conn, step.head, step.accepted)
        await store.ledger.record_duplicates(conn, step.duplicates)
        await store.ledger.record_rejected(conn, step.rejected)
        if step.duplicates:
            self.duplicates.labels(dataset).inc(len(step.duplicates))
        emitted = await tx.emit_many([(e.data, e.cause) for e in emits])
        await store.triggers.record_requests(
            conn,
            [
                RequestRecord(sent.id, e.data, e.covers, e.cause.time)
                for sent, e in zip(emitted, emits, strict=True)
                if e.covers is not None and isinstance(e.data, TrainingRequested)
            ],
        )

    async def _request(
        self, tx: Tx, request: TrainingRequested, head: DatasetHead, cause: CloudEvent[Any] | None
    ) -> str:
        """Emit a request and record it as covering ``head``, requested when its cause
        happened (a manual one: when it is emitted)."""
        emitted = await tx.emit(request)
        requested_at = (cause or emitted).time
        await self.stores.triggers.record_requests(
            tx.conn, [RequestRecord(emitted.id, request, head, requested_at)]
        )
        return emitted.id

    async def on_drift_detected(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Request a drift retrain unless the model's cool-down absorbs it."""
        drift: DriftDetected = event.data
        cfg = self._model(drift.model)
        head = await self.stores.ledger.lock_dataset(tx.conn, cfg.dataset)
        state = await self.stores.triggers.lock_trigger(tx.conn, drift.model, cfg.dataset)
        request = ledger.drift_request(
            model=drift.model,
            dataset=cfg.dataset,
            detected_at=event.time,
            last_drift_request_at=state.last_drift_request_at,
            cooldown=cfg.retrain.drift_cooldown,
            trigger_event_id=event.id,
        )
        if request is None:
            await self.stores.triggers.count_suppressed_drift(tx.conn, drift.model)
            return
        await self._request(tx, request, head, event)

    async def on_training_requested(self, events: list[CloudEvent[Any]], tx: Tx) -> None:
        """Queue the runs of requests (the workers train them; one run per request id), a
        Kafka batch in one transaction and a few statements.

        A request decided elsewhere (the CLI publishing directly, another tool) covers the
        ledger as it is now and restarts the model's counter; it takes its dataset's lock, in
        dataset order like every other transaction, and the run keeps the trace of this
        consumption (such a request has no outbox row here).
        """
        conn, store = tx.conn, self.stores
        decided = await store.triggers.decided_requests(conn, [e.id for e in events])
        datasets = {e.id: self._model(e.data.model).dataset for e in events}
        for event in ledger.undecided_requests(events, decided, datasets):
            request: TrainingRequested = event.data
            dataset = datasets[event.id]
            head = await store.ledger.lock_dataset(conn, dataset)
            await store.triggers.lock_trigger(conn, request.model, dataset)
            await store.triggers.record_requests(
                conn, [RequestRecord(event.id, request, head, event.time)]
            )
            decided[event.id] = DecidedRequest(head.last_seq, current_traceparent())
        await store.runs.insert_runs(
            conn, [queue_run(e, datasets[e.id], decided[e.id]) for e in events]
        )

    async def on_model_registered(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Remember the version's artifact, to score it as the baseline while it serves."""
        data: ModelVersionRegistered = event.data
        await self.stores.production.record_version(
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
        current = await self.stores.production.production_version(tx.conn, data.model)
        after = domain.production_after_promotion(current, data)
        if after != current:
            await self.stores.production.set_production(tx.conn, data.model, after, event.id)

    async def on_model_rolled_back(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Follow the production alias back."""
        data: ModelRolledBack = event.data
        current = await self.stores.production.production_version(tx.conn, data.model)
        after = domain.production_after_rollback(current, data)
        if after != current:
            await self.stores.production.set_production(tx.conn, data.model, after, event.id)

    async def request_manual(self, tx: Tx, model: str, *, requested_by: str) -> str:
        """Manual trigger: emit TrainingRequested(reason=manual); returns the request id."""
        cfg = self._model(model)
        head = await self.stores.ledger.lock_dataset(tx.conn, cfg.dataset)
        await self.stores.triggers.lock_trigger(tx.conn, model, cfg.dataset)
        request = ledger.manual_request(model=model, dataset=cfg.dataset, requested_by=requested_by)
        return await self._request(tx, request, head, None)
