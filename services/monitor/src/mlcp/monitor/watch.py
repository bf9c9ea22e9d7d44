"""Verdicts: closed drift windows → DriftDetected, canary bakes → CanaryHealthy / ModelDegraded,
production rollback windows → ModelDegraded; and the projections that open and end watches
(ModelVersionRegistered, ModelPromoted, ModelRolledBack).

Every handler loads through the stores, lets ``domain`` decide, saves, then emits. A decision
is recorded under a unique key before its event is emitted, so a redelivered batch or a restart
never decides twice.

A verdict about a version belongs to the version's lifecycle: it carries the correlation id kept
from the version's registration (and continues its trace), and names as its cause the prediction
whose arrival decided it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from mlcp.contracts import (
    CloudEvent,
    EventData,
    ModelPromoted,
    ModelRolledBack,
    ModelVersionRegistered,
)
from mlcp.monitor import domain
from mlcp.monitor.catalog import Catalog
from mlcp.monitor.domain import CANARY, PRODUCTION, OpenWindow, Watch
from mlcp.monitor.drift import DriftReport, Encoded, Layout, evaluate_window
from mlcp.monitor.metrics import MonitorMetrics
from mlcp.monitor.ports import OpenStores, Stores, VersionInfo
from mlcp.policy.platform import DriftPolicy, RolloutPolicy
from mlcp.runtime import Tx
from mlcp.runtime.outbox import Cause
from mlcp.runtime.telemetry import current_traceparent, resume_trace


class Causes:
    """Which prediction of a model's batch decided a verdict: the one numbered ``n`` for its
    version when it is in this batch, else the batch's latest prediction of the model (a bake
    that ended by ``max_duration``, a rollback window that ended by time)."""

    def __init__(self, latest: datetime, latest_cause: Cause) -> None:
        self.latest = latest
        """The time of the batch's latest prediction of the model: the decision clock."""
        self.latest_cause = latest_cause
        self._rows: dict[str, tuple[int, Sequence[Cause]]] = {}

    def add(self, version: str, first_n: int, rows: Sequence[Cause]) -> None:
        """The version's predictions in this batch (``rows``) are numbered from ``first_n``."""
        self._rows[version] = (first_n, rows)

    def of(self, version: str, n: int) -> Cause:
        """The version's prediction numbered ``n`` (the batch's latest when not here)."""
        first_n, rows = self._rows.get(version, (0, ()))
        if first_n <= n < first_n + len(rows):
            return rows[n - first_n]
        return self.latest_cause


class Watcher:
    """The monitor's verdicts and the projections that open and end its watches."""

    def __init__(self, catalog: Catalog, metrics: MonitorMetrics, open_stores: OpenStores) -> None:
        self._catalog = catalog
        self._metrics = metrics
        self._open = open_stores

    # -- projections ------------------------------------------------------------------------

    async def on_model_version_registered(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Keep the version's reference profile, offline metrics and lifecycle."""
        data: ModelVersionRegistered = event.data
        info = VersionInfo(
            data.reference_profile.model_dump(mode="json"),
            dict(data.metrics),
            domain.Lifecycle(event.correlationid or event.id, current_traceparent()),
        )
        await self._open(tx.conn).versions.add(data.model, data.version, info, event.time)

    async def on_model_promoted(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Follow the alias; a canary starts its bake, a production version its rollback window."""
        data: ModelPromoted = event.data
        model, version, at = data.model, data.version, event.time
        stores = self._open(tx.conn)
        await stores.aliases.set(model, data.alias, version, at)
        if data.alias == CANARY:
            baseline = await stores.aliases.version(model, PRODUCTION)
            served = await _lock_served(stores, model, {version, baseline})
            await stores.watches.end_alias(model, CANARY, "superseded", at)
            await stores.watches.start(domain.canary_watch(model, version, baseline, served, at))
        elif data.alias == PRODUCTION:
            if await stores.aliases.version(model, CANARY) == version:
                await stores.aliases.drop(model, CANARY, version)
            await stores.watches.end_alias(model, CANARY, "promoted", at, version=version)
            served = await _lock_served(stores, model, {version})
            await stores.watches.end_alias(model, PRODUCTION, "superseded", at)
            policy = self._catalog.rollout_policy(model)
            await stores.watches.start(
                domain.production_watch(
                    model, version, data.previous_version, served[version], at, policy
                )
            )
        await stores.observations.prune(model)

    async def on_model_rolled_back(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Follow the alias back; the watch of the version taken out ends."""
        data: ModelRolledBack = event.data
        stores = self._open(tx.conn)
        if data.to_version is not None:
            await stores.aliases.set(data.model, data.alias, data.to_version, event.time)
        else:
            await stores.aliases.drop(data.model, data.alias, data.from_version)
        await stores.watches.end_alias(
            data.model, data.alias, "rolled_back", event.time, version=data.from_version
        )
        await stores.observations.prune(data.model)

    # -- drift windows ----------------------------------------------------------------------

    async def decide_drift(
        self,
        tx: Tx,
        stores: Stores,
        model: str,
        version: str,
        window: OpenWindow,
        layout: Layout,
        rows: Encoded,
        policy: DriftPolicy,
        cause: Cause,
    ) -> None:
        """Test a closed window; record its decision once, emit DriftDetected if it drifted."""
        if rows.rows == 0:
            return
        report = evaluate_window(layout, rows, policy)
        aliases = await stores.aliases.of(model, version)
        decision = domain.decide_drift(
            model, version, aliases[0] if aliases else None, window, report
        )
        if decision is None:
            return
        first = await stores.decisions.record(
            model,
            version,
            decision.window_id,
            "drift",
            emitted=decision.event is not None,
            payload=decision.record,
        )
        if not first:
            return
        self._record_scores(model, version, report)
        outcome = "drifted" if decision.event is not None else "stable"
        self._metrics.decisions.labels(model, version, "drift", outcome).inc()
        if decision.event is not None:
            await self._emit_verdict(tx, stores, model, version, decision.event, cause)

    def _record_scores(self, model: str, version: str, report: DriftReport) -> None:
        for test in report.tests:
            self._metrics.drift_score.labels(model, version, test.name, test.method).set(test.score)
        self._metrics.share_drifted.labels(model, version).set(report.share_drifted)

    # -- canary bake and rollback window ----------------------------------------------------

    async def judge(
        self,
        tx: Tx,
        stores: Stores,
        model: str,
        watches: list[Watch],
        causes: Causes,
    ) -> None:
        """Judge the model's open watches at the time of the batch's latest prediction."""
        latest = causes.latest  # the decision clock, read once per model and batch
        policy = self._catalog.rollout_policy(model)
        ended = False
        for watch in watches:
            served = await stores.traffic.served(model, watch.version)
            if watch.alias == CANARY:
                ended |= await self._judge_canary(tx, stores, watch, policy, served, latest, causes)
            elif watch.alias == PRODUCTION:
                ended |= await self._judge_production(
                    tx, stores, watch, policy, served, latest, causes
                )
        if ended:
            await stores.observations.prune(model)

    async def _baseline_accuracy(self, stores: Stores, watch: Watch) -> float | None:
        # Production's live accuracy over the same period when labels exist; otherwise the
        # accuracy the version itself showed on its holdout at registration.
        if watch.baseline_version and watch.baseline_from is not None:
            base = await stores.observations.stats(
                watch.model,
                watch.baseline_version,
                self._catalog.target(watch.model),
                watch.baseline_from,
            )
            if base.accuracy is not None:
                return base.accuracy
        found = await self._catalog.version(stores.versions, watch.model, watch.version)
        return found.metrics.get("accuracy") if found else None

    async def _observed(
        self, stores: Stores, watch: Watch, stats: domain.TrafficStats
    ) -> dict[str, float | None]:
        return domain.measures(
            stats,
            baseline_accuracy=await self._baseline_accuracy(stores, watch),
            drift_share=await stores.decisions.latest_drift_share(
                watch.model, watch.version, watch.started_at
            ),
        )

    async def _judge_canary(
        self,
        tx: Tx,
        stores: Stores,
        watch: Watch,
        policy: RolloutPolicy,
        served: int,
        latest: datetime,
        causes: Causes,
    ) -> bool:
        if not domain.bake_over(watch, policy, served, latest):
            return False  # still baking: no query needed
        target = self._catalog.target(watch.model)
        stats = await stores.observations.stats(
            watch.model, watch.version, target, watch.served_from
        )
        observed = await self._observed(stores, watch, stats)
        verdict = domain.judge_canary(policy, stats, observed, latest - watch.started_at)
        if verdict is None:
            return False
        # The prediction that completed the bake (or the latest one, when time ended it).
        cause = causes.of(watch.version, watch.served_from + policy.bake.min_predictions)
        await self._conclude(
            tx, stores, watch, verdict, stats.count, latest, f"watch-{watch.id}", CANARY, cause
        )
        return True

    async def _judge_production(
        self,
        tx: Tx,
        stores: Stores,
        watch: Watch,
        policy: RolloutPolicy,
        served: int,
        latest: datetime,
        causes: Causes,
    ) -> bool:
        size = policy.bake.min_predictions
        target = self._catalog.target(watch.model)
        for k in domain.production_windows_due(served - watch.served_from, size, watch.next_window):
            start = watch.served_from + (k - 1) * size
            stats = await stores.observations.stats(
                watch.model, watch.version, target, start, start + size
            )
            verdict = domain.judge_production_window(
                policy, await self._observed(stores, watch, stats)
            )
            window_id = f"watch-{watch.id}-{k}"
            if not verdict.healthy:
                cause = causes.of(watch.version, start + size)  # the window's last prediction
                await self._conclude(
                    tx, stores, watch, verdict, stats.count, latest, window_id, PRODUCTION, cause
                )
                return True
            await stores.decisions.record(
                watch.model,
                watch.version,
                window_id,
                PRODUCTION,
                emitted=False,
                payload={"healthy": True, "count": stats.count},
            )
            await stores.watches.advance(watch.id, k + 1)
        if watch.until is not None and latest >= watch.until:
            await stores.watches.end(watch.id, "passed", latest)
            return True
        return False

    async def _conclude(
        self,
        tx: Tx,
        stores: Stores,
        watch: Watch,
        verdict: domain.Verdict,
        count: int,
        latest: datetime,
        window_id: str,
        kind: str,
        cause: Cause,
    ) -> None:
        event = domain.verdict_event(watch, verdict, count, latest)
        first = await stores.decisions.record(
            watch.model,
            watch.version,
            window_id,
            kind,
            emitted=True,
            payload=event.model_dump(mode="json"),
        )
        outcome = "healthy" if verdict.healthy else "degraded"
        await stores.watches.end(watch.id, outcome, latest)
        if first:
            self._metrics.decisions.labels(watch.model, watch.version, kind, outcome).inc()
            await self._emit_verdict(tx, stores, watch.model, watch.version, event, cause)

    async def _emit_verdict(
        self,
        tx: Tx,
        stores: Stores,
        model: str,
        version: str,
        data: EventData,
        cause: Cause,
    ) -> None:
        """Emit a verdict about ``version`` as part of its lifecycle, caused by ``cause``."""
        found = await self._catalog.version(stores.versions, model, version)
        lifecycle = found.lifecycle if found else domain.Lifecycle()
        with resume_trace(
            lifecycle.traceparent, "mlcp.monitor.verdict", model=model, version=version
        ):
            await tx.emit(data, cause=cause, correlationid=lifecycle.correlation_id)


async def _lock_served(stores: Stores, model: str, versions: set[str | None]) -> dict[str, int]:
    # Traffic rows are always locked before watches, in version order: no deadlock cycles.
    return {
        v: (await stores.traffic.lock(model, v)).served for v in sorted(x for x in versions if x)
    }
