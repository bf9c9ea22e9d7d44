"""Ingest: predictions and feedback, in batches, into drift windows, counts and watch statistics.

Predictions and feedback arrive in batches (one transaction per Kafka batch, as the fast
decoder's WireEvents of ``mlcp.contracts.wire``). Per model and version, a batch is turned into
``Columns`` once (numpy arrays, the encoded feature matrices), then ``Ingest.update``:

1. ``domain.split_windows`` cuts it into drift-window segments by count and age;
2. an open window's rows are appended to the traffic store as one ``Chunk`` per batch; a
   closing window's stored chunks and its last rows go to ``Watcher.decide_drift``;
3. the rows of watched versions are stored for the watch statistics;
4. the version's count and open window are saved;

and the model's watches are judged once per batch (``Watcher.judge``). ``Ingest.update``
works on arrays only (``Layout.encode`` → ``Encoded``; timestamps as ``datetime64``), so a
columnar source can build ``Columns`` and feed steps 1-4 without per-event objects.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcp.contracts.wire import FeedbackReceivedWire, PredictionLoggedWire, WireEvent
from mlcp.monitor import domain
from mlcp.monitor.catalog import Catalog, Version
from mlcp.monitor.domain import Traffic
from mlcp.monitor.drift import Encoded, Layout
from mlcp.monitor.metrics import MonitorMetrics
from mlcp.monitor.ports import FeedbackRows, OpenStores, PredictionRows, Stores
from mlcp.monitor.watch import Causes, Watcher
from mlcp.runtime import Tx
from mlcp.runtime.consumer import Refused
from mlcp.runtime.outbox import Cause

log = logging.getLogger(__name__)

_TS, _LATENCY, _ERROR, _FEATURES, _DATA, _REQUEST_ID, _PREDICTION = (
    attrgetter(f)
    for f in ("ts", "latency_ms", "error", "features", "data", "request_id", "prediction")
)


def _ts_of(event: WireEvent) -> datetime:
    ts: datetime = event.data.ts
    return ts


@dataclass(frozen=True)
class Columns:
    """One version's predictions of a batch as columns (row i = the i-th in arrival order):
    what ``Ingest.update`` consumes."""

    request_ids: Sequence[str]
    ts: Sequence[datetime]
    """Aware timestamps (the prediction's ``ts``): windows close by them, not by a clock."""
    latency_ms: npt.NDArray[np.float64]
    error: npt.NDArray[np.bool_]
    features: Encoded
    """The feature values encoded against the version's reference profile (``Layout.encode``)."""
    predictions: Sequence[Any]
    """The raw predictions (None for a failed request), keyed by the model's target on storage."""
    causes: Sequence[Cause]
    """The event each row came from: a verdict the row decides names it as its cause (for a
    columnar batch event, the batch event itself at every row)."""

    @classmethod
    def of(cls, events: list[WireEvent], layout: Layout) -> Columns:
        """The columns of decoded PredictionLogged events (map(attrgetter) walks thousands of
        predictions in C, not in a generator's frames)."""
        preds: list[PredictionLoggedWire] = list(map(_DATA, events))
        n = len(preds)
        return cls(
            request_ids=list(map(_REQUEST_ID, preds)),
            ts=list(map(_TS, preds)),
            latency_ms=np.fromiter(map(_LATENCY, preds), np.float64, count=n),
            error=np.fromiter(map(_ERROR, preds), np.bool_, count=n),
            features=layout.encode(list(map(_FEATURES, preds))),
            predictions=list(map(_PREDICTION, preds)),
            causes=events,
        )


class Ingest:
    """The monitor's batch handlers: PredictionLogged and FeedbackReceived."""

    def __init__(
        self,
        catalog: Catalog,
        metrics: MonitorMetrics,
        watcher: Watcher,
        open_stores: OpenStores,
    ) -> None:
        self._catalog = catalog
        self._metrics = metrics
        self._watcher = watcher
        self._open = open_stores

    # -- feedback ---------------------------------------------------------------------------

    async def on_feedback_received(self, events: list[WireEvent], tx: Tx) -> None:
        """Store true labels (as keys of the model's target; a label that does not fit is
        refused to the DLQ); live accuracy joins them to predictions when a verdict is due."""
        self._refuse_misfits(events, "label")
        by_model: dict[str, list[FeedbackReceivedWire]] = defaultdict(list)
        for event in events:
            by_model[event.data.model].append(event.data)
        stores = self._open(tx.conn)
        for model, items in sorted(by_model.items()):
            key = self._catalog.target(model).key
            rows = FeedbackRows(
                [f.request_id for f in items], [key(f.label) for f in items], [f.ts for f in items]
            )
            await stores.observations.add_feedback(model, rows)
            self._metrics.feedback.labels(model).inc(len(items))

    def _refuse_misfits(self, events: list[WireEvent], what: str) -> None:
        """Refuse (to the DLQ, at once) the events whose prediction or label does not fit
        their model's declared target; a model of ``type: auto`` refuses nothing."""
        strict = self._catalog.strict
        if not strict:
            return  # the usual case: no model declares a type, nothing to check per event
        refused: dict[str, str] = {}
        for event in events:
            data = event.data
            if data.model not in strict:
                continue
            if what == "label":
                value = data.label
            elif data.error or data.prediction is None:
                continue  # a failed request has no prediction to score
            else:
                value = data.prediction
            target = self._catalog.target(data.model)
            why = domain.misfit(target, data.model, f"{what} of request {data.request_id}:", value)
            if why is not None:
                refused[event.id] = why
        if refused:
            raise Refused(refused, reason=domain.TARGET_MISMATCH)

    # -- predictions ------------------------------------------------------------------------

    async def on_prediction_logged(self, events: list[WireEvent], tx: Tx) -> None:
        """Fill each version's drift window (deciding the windows that close) and the stats of
        watched versions, then judge the model's canary / rollback-window watches. A prediction
        that does not fit its model's declared target is refused to the DLQ."""
        self._refuse_misfits(events, "prediction")
        groups: dict[str, dict[str, list[WireEvent]]] = defaultdict(lambda: defaultdict(list))
        for event in events:
            data: PredictionLoggedWire = event.data
            groups[data.model][data.version].append(event)
        stores = self._open(tx.conn)
        for model, versions in sorted(groups.items()):
            known: dict[str, Version] = {}
            for version, batch in sorted(versions.items()):
                found = await self._catalog.version(stores.versions, model, version)
                if found is None:
                    await self._unknown_version(stores, model, version, len(batch))
                else:
                    known[version] = found
            # Traffic rows are locked before watches, in version order: no deadlock cycles.
            traffic = {v: await stores.traffic.lock(model, v) for v in sorted(known)}
            watches = await stores.watches.open(model)
            watched = {v for w in watches for v in (w.version, w.baseline_version) if v}
            causes = None
            if watches:
                latest = max((e for batch in versions.values() for e in batch), key=_ts_of)
                causes = Causes(latest.data.ts, latest)
            for version in sorted(known):
                layout = known[version].layout
                columns = Columns.of(versions[version], layout)
                if causes is not None:
                    causes.add(version, traffic[version].served + 1, columns.causes)
                await self.update(
                    tx,
                    stores,
                    model,
                    version,
                    columns,
                    layout,
                    traffic[version],
                    store_rows=version in watched,
                )
            if causes is not None:
                await self._watcher.judge(tx, stores, model, watches, causes)

    async def _unknown_version(self, stores: Stores, model: str, version: str, count: int) -> None:
        log.warning("%d predictions for unregistered version %s %s ignored", count, model, version)
        self._metrics.issues.labels(model, version, "unknown_version").inc(count)
        await stores.decisions.add_issue(model, version, "unknown_version", count)

    async def update(
        self,
        tx: Tx,
        stores: Stores,
        model: str,
        version: str,
        columns: Columns,
        layout: Layout,
        traffic: Traffic,
        *,
        store_rows: bool,
    ) -> Traffic:
        """Add one version's predictions (``columns``, in arrival order) to its counts and drift
        windows — deciding each window that closes — and, for a watched version
        (``store_rows``), to the watch statistics. ``traffic`` is the version's locked state;
        the new state is saved and returned. Works on arrays only: any source of columns
        (a decoded batch, a columnar batch event) feeds the monitor through here."""
        self._count(model, version, layout, columns)
        await self._count_issues(stores, model, version, columns.features)
        policy = self._catalog.drift_policy(model)
        segments, open_window = domain.split_windows(
            traffic.window,
            domain.to_datetime64(columns.ts),
            size=policy.window_size,
            max_age=policy.window_max_age,
        )
        for seg in segments:
            part = columns.features.slice(seg.start, seg.stop)
            if seg.closes:
                chunks = await stores.traffic.take_chunks(model, version, seg.seq)
                rows = Encoded.from_chunks([*chunks, part.to_chunk()], layout)
                closer = columns.causes[seg.closer if seg.closer is not None else seg.stop - 1]
                await self._watcher.decide_drift(
                    tx, stores, model, version, seg.window, layout, rows, policy, closer
                )
            elif part.rows:
                await stores.traffic.add_chunk(model, version, seg.seq, part.to_chunk())
        if store_rows:
            key = self._catalog.target(model).key
            rows_of = PredictionRows(
                first_n=traffic.served + 1,
                request_ids=list(columns.request_ids),
                ts=list(columns.ts),
                latency_ms=columns.latency_ms,
                error=columns.error,
                prediction=[
                    None if failed or p is None else key(p)
                    for p, failed in zip(columns.predictions, columns.error.tolist(), strict=True)
                ],
            )
            await stores.observations.add_predictions(model, version, rows_of)
        updated = Traffic(traffic.served + len(columns.ts), open_window)
        await stores.traffic.save(model, version, updated)
        return updated

    def _count(self, model: str, version: str, layout: Layout, columns: Columns) -> None:
        error, latency, encoded = columns.error, columns.latency_ms, columns.features
        errors = int(error.sum())
        self._metrics.predictions.labels(model, version, "ok").inc(len(error) - errors)
        if errors:
            self._metrics.predictions.labels(model, version, "error").inc(errors)
        self._metrics.latency.observe_many(model, version, latency)
        for name, missing in zip(layout.names, encoded.missing_per_feature(), strict=True):
            if missing:
                self._metrics.missing.labels(model, version, name).inc(int(missing))

    async def _count_issues(
        self, stores: Stores, model: str, version: str, encoded: Encoded
    ) -> None:
        for reason, count in (
            ("missing_features", encoded.rows_with_missing()),
            ("bad_value", encoded.bad_values),
        ):
            if count:
                self._metrics.issues.labels(model, version, reason).inc(count)
                await stores.decisions.add_issue(model, version, reason, count)
