"""Event handlers of the monitor: event → domain → store + outbox, in the inbox transaction.

Predictions and feedback arrive in batches (one transaction per Kafka batch, as the fast
decoder's WireEvents of mlcp.contracts.wire); registrations,
promotions and rollbacks one at a time. Every decision is recorded under a unique key before
its event is emitted, so a redelivered batch or a restart never decides twice.

A verdict about a version (DriftDetected, CanaryHealthy, ModelDegraded) belongs to the version's
lifecycle: it carries the correlation id kept from the version's registration (and continues
its trace), and names as its cause the prediction whose arrival decided it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any

import numpy as np

from mlcp.contracts import (
    CanaryHealthy,
    CloudEvent,
    DriftDetected,
    FeatureDrift,
    ModelDegraded,
    ModelPromoted,
    ModelRolledBack,
    ModelVersionRegistered,
    ReferenceProfile,
    Window,
)
from mlcp.contracts.wire import FeedbackReceivedWire, PredictionLoggedWire, WireEvent
from mlcp.monitor import domain, store
from mlcp.monitor.drift import DriftReport, Encoded, Layout, evaluate_window
from mlcp.monitor.metrics import MonitorMetrics
from mlcp.policy.platform import DriftPolicy, PlatformConfig, RolloutPolicy
from mlcp.policy.target import Target
from mlcp.runtime import Tx
from mlcp.runtime.consumer import Refused
from mlcp.runtime.telemetry import current_traceparent, resume_trace

log = logging.getLogger(__name__)

CANARY, PRODUCTION = "canary", "production"
_TS, _LATENCY, _ERROR, _FEATURES, _DATA = (
    attrgetter(f) for f in ("ts", "latency_ms", "error", "features", "data")
)


@dataclass(frozen=True)
class Version:
    """A registered version as the monitor uses it (immutable: cached for good)."""

    layout: Layout
    metrics: dict[str, float]
    lifecycle: domain.Lifecycle


class Causes:
    """Which prediction of a model's batch decided a verdict: the one numbered ``n`` for its
    version when it is in this batch, else the batch's latest prediction of the model (a bake
    that ended by ``max_duration``, a rollback window that ended by time)."""

    def __init__(self, versions: dict[str, list[WireEvent]]) -> None:
        self._events = versions
        self._first_n: dict[str, int] = {}
        self.latest = max((e for batch in versions.values() for e in batch), key=_ts_of)

    def add(self, version: str, first_n: int) -> None:
        """The version's predictions in this batch are numbered from ``first_n``."""
        self._first_n[version] = first_n

    def of(self, version: str, n: int) -> WireEvent:
        """The version's prediction numbered ``n`` (the batch's latest when not here)."""
        events = self._events.get(version, [])
        first_n = self._first_n.get(version)
        if first_n is not None and first_n <= n < first_n + len(events):
            return events[n - first_n]
        return self.latest


class Monitor:
    """The monitor's handlers, with its configuration, metrics and a cache of profiles."""

    def __init__(self, config: PlatformConfig, metrics: MonitorMetrics) -> None:
        self._config = config
        self._metrics = metrics
        # Models whose target refuses some values (a declared type, or a regression).
        self._strict = {name for name, m in config.models.items() if m.target.strict}
        # Versions are immutable once registered: their parsed profiles can be cached forever.
        self._versions: dict[tuple[str, str], Version] = {}

    def drift_policy(self, model: str) -> DriftPolicy:
        """The model's drift policy (defaults for a model the config does not list)."""
        found = self._config.models.get(model)
        return found.drift if found else DriftPolicy()

    def rollout_policy(self, model: str) -> RolloutPolicy:
        """The model's rollout policy (defaults for a model the config does not list)."""
        found = self._config.models.get(model)
        return found.rollout if found else RolloutPolicy()

    def target(self, model: str) -> Target:
        """How the model's predictions and labels compare (the default for unlisted models)."""
        return self._config.target(model)

    async def _version(self, tx: Tx, model: str, version: str) -> Version | None:
        key = (model, version)
        if key not in self._versions:
            info = await store.version_info(tx.conn, model, version)
            if info is None:
                return None
            profile = ReferenceProfile.model_validate(info.reference_profile)
            self._versions[key] = Version(Layout(profile), info.metrics, info.lifecycle)
        return self._versions[key]

    async def _emit_verdict(
        self, tx: Tx, model: str, version: str, data: Any, cause: WireEvent
    ) -> None:
        """Emit a verdict about ``version`` as part of its lifecycle, caused by ``cause``."""
        found = await self._version(tx, model, version)
        lifecycle = found.lifecycle if found else domain.Lifecycle()
        with resume_trace(
            lifecycle.traceparent, "mlcp.monitor.verdict", model=model, version=version
        ):
            await tx.emit(data, cause=cause, correlationid=lifecycle.correlation_id)

    # -- projections ------------------------------------------------------------------------

    async def on_version_registered(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Keep the version's reference profile, offline metrics and lifecycle."""
        data: ModelVersionRegistered = event.data
        await store.add_version(
            tx.conn,
            data.model,
            data.version,
            data.reference_profile.model_dump(mode="json"),
            dict(data.metrics),
            event.time,
            domain.Lifecycle(event.correlationid or event.id, current_traceparent()),
        )

    async def on_model_promoted(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Follow the alias; a canary starts its bake, a production version its rollback window."""
        data: ModelPromoted = event.data
        model, version, at = data.model, data.version, event.time
        await store.set_alias(tx.conn, model, data.alias, version, at)
        if data.alias == CANARY:
            baseline = await store.alias_version(tx.conn, model, PRODUCTION)
            served = await self._lock_served(tx, model, {version, baseline})
            await store.end_watches(tx.conn, model, CANARY, "superseded", at)
            await store.start_watch(
                tx.conn,
                model=model,
                version=version,
                alias=CANARY,
                baseline_version=baseline if baseline != version else None,
                started_at=at,
                until=None,
                served_from=served[version],
                baseline_from=served.get(baseline) if baseline else None,
            )
        elif data.alias == PRODUCTION:
            if await store.alias_version(tx.conn, model, CANARY) == version:
                await store.drop_alias(tx.conn, model, CANARY, version)
            await store.end_watches(tx.conn, model, CANARY, "promoted", at, version=version)
            served = await self._lock_served(tx, model, {version})
            await store.end_watches(tx.conn, model, PRODUCTION, "superseded", at)
            await store.start_watch(
                tx.conn,
                model=model,
                version=version,
                alias=PRODUCTION,
                baseline_version=data.previous_version,
                started_at=at,
                until=at + self.rollout_policy(model).rollback_window,
                served_from=served[version],
                baseline_from=None,
            )
        await store.prune_predictions(tx.conn, model)

    async def on_model_rolled_back(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Follow the alias back; the watch of the version taken out ends."""
        data: ModelRolledBack = event.data
        if data.to_version is not None:
            await store.set_alias(tx.conn, data.model, data.alias, data.to_version, event.time)
        else:
            await store.drop_alias(tx.conn, data.model, data.alias, data.from_version)
        await store.end_watches(
            tx.conn, data.model, data.alias, "rolled_back", event.time, version=data.from_version
        )
        await store.prune_predictions(tx.conn, data.model)

    async def _lock_served(self, tx: Tx, model: str, versions: set[str | None]) -> dict[str, int]:
        # Traffic rows are always locked before watches, in version order: no deadlock cycles.
        return {
            v: (await store.lock_traffic(tx.conn, model, v)).served
            for v in sorted(x for x in versions if x)
        }

    # -- feedback ---------------------------------------------------------------------------

    async def on_feedback(self, events: list[WireEvent], tx: Tx) -> None:
        """Store true labels (as keys of the model's target; a label that does not fit is
        refused to the DLQ); live accuracy joins them to predictions when a verdict is due."""
        self._refuse_misfits(events, "label")
        by_model: dict[str, list[FeedbackReceivedWire]] = defaultdict(list)
        for event in events:
            by_model[event.data.model].append(event.data)
        for model, items in sorted(by_model.items()):
            key = self.target(model).key
            await store.add_feedback(
                tx.conn,
                model,
                [f.request_id for f in items],
                [key(f.label) for f in items],
                [f.ts for f in items],
            )
            self._metrics.feedback.labels(model).inc(len(items))

    def _refuse_misfits(self, events: list[WireEvent], what: str) -> None:
        """Refuse (to the DLQ, at once) the events whose prediction or label does not fit
        their model's declared target; a model of ``type: auto`` refuses nothing."""
        if not self._strict:
            return  # the usual case: no model declares a type, nothing to check per event
        refused: dict[str, str] = {}
        for event in events:
            data = event.data
            if data.model not in self._strict:
                continue
            target = self.target(data.model)
            if what == "label":
                value = data.label
            elif data.error or data.prediction is None:
                continue  # a failed request has no prediction to score
            else:
                value = data.prediction
            why = domain.misfit(target, data.model, f"{what} of request {data.request_id}:", value)
            if why is not None:
                refused[event.id] = why
        if refused:
            raise Refused(refused, reason=domain.TARGET_MISMATCH)

    # -- predictions ------------------------------------------------------------------------

    async def on_predictions(self, events: list[WireEvent], tx: Tx) -> None:
        """Fill each version's drift window (deciding the windows that close) and the stats of
        watched versions, then judge the model's canary / rollback-window watches. A prediction
        that does not fit its model's declared target is refused to the DLQ."""
        self._refuse_misfits(events, "prediction")
        groups: dict[str, dict[str, list[WireEvent]]] = defaultdict(lambda: defaultdict(list))
        for event in events:
            data: PredictionLoggedWire = event.data
            groups[data.model][data.version].append(event)
        for model, versions in sorted(groups.items()):
            known: dict[str, Version] = {}
            for version, batch in sorted(versions.items()):
                found = await self._version(tx, model, version)
                if found is None:
                    await self._unknown_version(tx, model, version, len(batch))
                else:
                    known[version] = found
            traffic = {v: await store.lock_traffic(tx.conn, model, v) for v in sorted(known)}
            watches = await store.open_watches(tx.conn, model)
            watched = {v for w in watches for v in (w.version, w.baseline_version) if v}
            causes = Causes(versions) if watches else None
            for version in sorted(known):
                if causes is not None:
                    causes.add(version, traffic[version].served + 1)
                traffic[version] = await self._ingest(
                    tx,
                    model,
                    version,
                    versions[version],
                    known[version].layout,
                    traffic[version],
                    store_rows=version in watched,
                )
            if causes is not None:
                await self._judge(tx, model, watches, causes.latest.data.ts, causes)

    async def _unknown_version(self, tx: Tx, model: str, version: str, count: int) -> None:
        log.warning("%d predictions for unregistered version %s %s ignored", count, model, version)
        self._metrics.issues.labels(model, version, "unknown_version").inc(count)
        await store.add_issue(tx.conn, model, version, "unknown_version", count)

    async def _ingest(
        self,
        tx: Tx,
        model: str,
        version: str,
        events: list[WireEvent],
        layout: Layout,
        traffic: store.Traffic,
        *,
        store_rows: bool,
    ) -> store.Traffic:
        preds: list[PredictionLoggedWire] = list(map(_DATA, events))
        n = len(preds)
        # map(attrgetter) walks thousands of predictions in C, not in a generator's frames.
        ts = list(map(_TS, preds))
        latency = np.fromiter(map(_LATENCY, preds), np.float64, count=n)
        error = np.fromiter(map(_ERROR, preds), np.bool_, count=n)
        encoded = layout.encode(list(map(_FEATURES, preds)))
        self._count(model, version, layout, encoded, latency, error)
        await self._count_issues(tx, model, version, encoded)

        policy = self.drift_policy(model)
        segments, open_window = domain.split_windows(
            traffic.window,
            domain.to_datetime64(ts),
            size=policy.window_size,
            max_age=policy.window_max_age,
        )
        for seg in segments:
            part = encoded.slice(seg.start, seg.stop)
            if seg.closes:
                chunks = await store.take_chunks(tx.conn, model, version, seg.seq)
                rows = Encoded.from_chunks([*chunks, (part.rows, *part.to_bytes())], layout)
                closer = events[seg.closer if seg.closer is not None else seg.stop - 1]
                await self._decide_drift(
                    tx, model, version, seg.window, layout, rows, policy, closer
                )
            elif part.rows:
                await store.add_chunk(tx.conn, model, version, seg.seq, part.rows, *part.to_bytes())
        if store_rows:
            key = self.target(model).key
            await store.add_predictions(
                tx.conn,
                model,
                version,
                traffic.served + 1,
                [p.request_id for p in preds],
                ts,
                latency,
                error,
                [None if p.error or p.prediction is None else key(p.prediction) for p in preds],
            )
        updated = store.Traffic(served=traffic.served + n, window=open_window)
        await store.save_traffic(tx.conn, model, version, updated)
        return updated

    def _count(
        self,
        model: str,
        version: str,
        layout: Layout,
        encoded: Encoded,
        latency: np.ndarray[Any, Any],
        error: np.ndarray[Any, Any],
    ) -> None:
        errors = int(error.sum())
        self._metrics.predictions.labels(model, version, "ok").inc(len(error) - errors)
        if errors:
            self._metrics.predictions.labels(model, version, "error").inc(errors)
        self._metrics.latency.observe_many(model, version, latency)
        for name, missing in zip(layout.names, encoded.missing_per_feature(), strict=True):
            if missing:
                self._metrics.missing.labels(model, version, name).inc(int(missing))

    async def _count_issues(self, tx: Tx, model: str, version: str, encoded: Encoded) -> None:
        for reason, count in (
            ("missing_features", encoded.rows_with_missing()),
            ("bad_value", encoded.bad_values),
        ):
            if count:
                self._metrics.issues.labels(model, version, reason).inc(count)
                await store.add_issue(tx.conn, model, version, reason, count)

    async def _decide_drift(
        self,
        tx: Tx,
        model: str,
        version: str,
        window: domain.OpenWindow,
        layout: Layout,
        rows: Encoded,
        policy: DriftPolicy,
        cause: WireEvent,
    ) -> None:
        if window.started_at is None or window.ended_at is None or rows.rows == 0:
            return
        report = evaluate_window(layout, rows, policy)
        span = Window(start=window.started_at, end=window.ended_at, size=rows.rows)
        aliases = await store.aliases_of(tx.conn, model, version)
        payload = {
            "window": span.model_dump(mode="json"),
            "share_drifted": report.share_drifted,
            "detected": report.detected,
            "tests": [t.__dict__ for t in report.tests],
        }
        first = await store.record_decision(
            tx.conn,
            model,
            version,
            f"drift-{window.seq}",
            "drift",
            emitted=report.detected,
            payload=payload,
        )
        if not first:
            return
        self._record_scores(model, version, report)
        outcome = "drifted" if report.detected else "stable"
        self._metrics.decisions.labels(model, version, "drift", outcome).inc()
        if report.detected:
            await self._emit_verdict(
                tx,
                model,
                version,
                DriftDetected(
                    model=model,
                    version=version,
                    alias=aliases[0] if aliases else None,
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
                ),
                cause,
            )

    def _record_scores(self, model: str, version: str, report: DriftReport) -> None:
        for test in report.tests:
            self._metrics.drift_score.labels(model, version, test.name, test.method).set(test.score)
        self._metrics.share_drifted.labels(model, version).set(report.share_drifted)

    # -- canary bake and rollback window ----------------------------------------------------

    async def _judge(
        self,
        tx: Tx,
        model: str,
        watches: list[store.Watch],
        latest: datetime,
        causes: Causes,
    ) -> None:
        policy = self.rollout_policy(model)
        ended = False
        for watch in watches:
            served = await store.served(tx.conn, model, watch.version)
            if watch.alias == CANARY:
                ended |= await self._judge_canary(tx, watch, policy, served, latest, causes)
            elif watch.alias == PRODUCTION:
                ended |= await self._judge_production(tx, watch, policy, served, latest, causes)
        if ended:
            await store.prune_predictions(tx.conn, model)

    async def _baseline_accuracy(self, tx: Tx, watch: store.Watch) -> float | None:
        # Production's live accuracy over the same period when labels exist; otherwise the
        # accuracy the version itself showed on its holdout at registration.
        if watch.baseline_version and watch.baseline_from is not None:
            base = await store.traffic_stats(
                tx.conn,
                watch.model,
                watch.baseline_version,
                self.target(watch.model),
                watch.baseline_from,
            )
            if base.accuracy is not None:
                return base.accuracy
        found = await self._version(tx, watch.model, watch.version)
        return found.metrics.get("accuracy") if found else None

    async def _observed(
        self, tx: Tx, watch: store.Watch, stats: domain.TrafficStats
    ) -> dict[str, float | None]:
        return domain.measures(
            stats,
            baseline_accuracy=await self._baseline_accuracy(tx, watch),
            drift_share=await store.latest_drift_share(
                tx.conn, watch.model, watch.version, watch.started_at
            ),
        )

    async def _judge_canary(
        self,
        tx: Tx,
        watch: store.Watch,
        policy: RolloutPolicy,
        served: int,
        latest: datetime,
        causes: Causes,
    ) -> bool:
        elapsed = latest - watch.started_at
        if served - watch.served_from < policy.bake.min_predictions and (
            elapsed < policy.bake.max_duration
        ):
            return False  # still baking: no query needed
        target = self.target(watch.model)
        stats = await store.traffic_stats(
            tx.conn, watch.model, watch.version, target, watch.served_from
        )
        observed = await self._observed(tx, watch, stats)
        verdict = domain.judge_canary(policy, stats, observed, elapsed)
        if verdict is None:
            return False
        # The prediction that completed the bake (or the latest one, when time ended it).
        cause = causes.of(watch.version, watch.served_from + policy.bake.min_predictions)
        await self._conclude(
            tx, watch, verdict, stats.count, latest, f"watch-{watch.id}", CANARY, cause
        )
        return True

    async def _judge_production(
        self,
        tx: Tx,
        watch: store.Watch,
        policy: RolloutPolicy,
        served: int,
        latest: datetime,
        causes: Causes,
    ) -> bool:
        size = policy.bake.min_predictions
        target = self.target(watch.model)
        for k in domain.production_windows_due(served - watch.served_from, size, watch.next_window):
            start = watch.served_from + (k - 1) * size
            stats = await store.traffic_stats(
                tx.conn, watch.model, watch.version, target, start, start + size
            )
            observed = await self._observed(tx, watch, stats)
            verdict = domain.judge_production_window(policy, observed)
            window_id = f"watch-{watch.id}-{k}"
            if not verdict.healthy:
                cause = causes.of(watch.version, start + size)  # the window's last prediction
                await self._conclude(
                    tx, watch, verdict, stats.count, latest, window_id, PRODUCTION, cause
                )
                return True
            await store.record_decision(
                tx.conn,
                watch.model,
                watch.version,
                window_id,
                PRODUCTION,
                emitted=False,
                payload={"healthy": True, "count": stats.count},
            )
            await store.advance_watch(tx.conn, watch.id, k + 1)
        if watch.until is not None and latest >= watch.until:
            await store.end_watch(tx.conn, watch.id, "passed", latest)
            return True
        return False

    async def _conclude(
        self,
        tx: Tx,
        watch: store.Watch,
        verdict: domain.Verdict,
        count: int,
        latest: datetime,
        window_id: str,
        kind: str,
        cause: WireEvent,
    ) -> None:
        span = Window(start=watch.started_at, end=max(latest, watch.started_at), size=count)
        evidence = tuple(verdict.evidence)
        event: CanaryHealthy | ModelDegraded
        if verdict.healthy:
            event = CanaryHealthy(
                model=watch.model,
                version=watch.version,
                window=span,
                evidence=evidence,
                baseline_version=watch.baseline_version,
            )
        else:
            event = ModelDegraded(
                model=watch.model,
                version=watch.version,
                alias=watch.alias,
                evidence=evidence,
                window=span,
                baseline_version=watch.baseline_version,
            )
        first = await store.record_decision(
            tx.conn,
            watch.model,
            watch.version,
            window_id,
            kind,
            emitted=True,
            payload=event.model_dump(mode="json"),
        )
        outcome = "healthy" if verdict.healthy else "degraded"
        await store.end_watch(tx.conn, watch.id, outcome, latest)
        if first:
            self._metrics.decisions.labels(watch.model, watch.version, kind, outcome).inc()
            await self._emit_verdict(tx, watch.model, watch.version, event, cause)


def _ts_of(event: WireEvent) -> datetime:
    ts: datetime = event.data.ts
    return ts
