"""Ingest: predictions and feedback, in batches, into drift windows, counts and watch statistics.

Predictions and feedback arrive in batches (one transaction per Kafka batch, as the fast
decoder's WireEvents of ``mlcp.contracts.wire``). Per model and version, a batch is turned into
columns once (numpy arrays, the encoded feature matrices), then:

1. ``domain.split_windows`` cuts it into drift-window segments by count and age;
2. an open window's rows are appended to the traffic store as one ``Chunk`` per batch; a
   closing window's stored chunks and its last rows go to ``Watcher.decide_drift``;
3. the rows of watched versions are stored for the watch statistics;
4. the version's count and open window are saved, and the model's watches judged.

Everything after the decode works on arrays (``Layout.encode`` → ``Encoded``; timestamps as
``datetime64``), so a columnar source can feed step 1-4 without building per-event objects.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from operator import attrgetter

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

log = logging.getLogger(__name__)

_TS, _LATENCY, _ERROR, _FEATURES, _DATA = (
    attrgetter(f) for f in ("ts", "latency_ms", "error", "features", "data")
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
            causes = Causes(versions) if watches else None
            for version in sorted(known):
                if causes is not None:
                    causes.add(version, traffic[version].served + 1)
                await self._ingest(
                    tx,
                    stores,
                    model,
                    version,
                    versions[version],
                    known[version].layout,
                    traffic[version],
                    store_rows=version in watched,
                )
            if causes is not None:
                await self._watcher.judge(tx, stores, model, watches, causes)

    async def _unknown_version(self, stores: Stores, model: str, version: str, count: int) -> None:
        log.warning("%d predictions for unregistered version %s %s ignored", count, model, version)
        self._metrics.issues.labels(model, version, "unknown_version").inc(count)
        await stores.decisions.add_issue(model, version, "unknown_version", count)

    async def _ingest(
        self,
        tx: Tx,
        stores: Stores,
        model: str,
        version: str,
        events: list[WireEvent],
        layout: Layout,
        traffic: Traffic,
        *,
        store_rows: bool,
    ) -> None:
        preds: list[PredictionLoggedWire] = list(map(_DATA, events))
        n = len(preds)
        # map(attrgetter) walks thousands of predictions in C, not in a generator's frames.
        ts = list(map(_TS, preds))
        latency = np.fromiter(map(_LATENCY, preds), np.float64, count=n)
        error = np.fromiter(map(_ERROR, preds), np.bool_, count=n)
        encoded = layout.encode(list(map(_FEATURES, preds)))
        self._count(model, version, layout, encoded, latency, error)
        await self._count_issues(stores, model, version, encoded)

        policy = self._catalog.drift_policy(model)
        segments, open_window = domain.split_windows(
            traffic.window,
            domain.to_datetime64(ts),
            size=policy.window_size,
            max_age=policy.window_max_age,
        )
        for seg in segments:
            part = encoded.slice(seg.start, seg.stop)
            if seg.closes:
                chunks = await stores.traffic.take_chunks(model, version, seg.seq)
                rows = Encoded.from_chunks([*chunks, part.to_chunk()], layout)
                closer = events[seg.closer if seg.closer is not None else seg.stop - 1]
                await self._watcher.decide_drift(
                    tx, stores, model, version, seg.window, layout, rows, policy, closer
                )
            elif part.rows:
                await stores.traffic.add_chunk(model, version, seg.seq, part.to_chunk())
        if store_rows:
            key = self._catalog.target(model).key
            rows_of = PredictionRows(
                first_n=traffic.served + 1,
                request_ids=[p.request_id for p in preds],
                ts=ts,
                latency_ms=latency,
                error=error,
                prediction=[
                    None if p.error or p.prediction is None else key(p.prediction) for p in preds
                ],
            )
            await stores.observations.add_predictions(model, version, rows_of)
        await stores.traffic.save(model, version, Traffic(traffic.served + n, open_window))

    def _count(
        self,
        model: str,
        version: str,
        layout: Layout,
        encoded: Encoded,
        latency: npt.NDArray[np.float64],
        error: npt.NDArray[np.bool_],
    ) -> None:
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
