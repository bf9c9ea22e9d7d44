"""Event handlers of the registry: event → domain decision → store + audit + outbox, one tx.

Every handler runs inside the runtime's inbox transaction, so a redelivered event is dropped
before it gets here; the business keys (run id, the version's status, the current canary) make
a legitimately re-sent event (new CloudEvents id, same facts) a no-op as well.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from typing import Any

from mlcp.contracts import (
    CanaryHealthy,
    CloudEvent,
    GateFailed,
    GatePassed,
    ModelDegraded,
    ModelPromoted,
    ModelRolledBack,
    ModelVersionRegistered,
    RunFinished,
)
from mlcp.policy.platform import PlatformConfig, RolloutPolicy
from mlcp.registry import domain, store
from mlcp.registry.audit import AuditTrail
from mlcp.registry.cache import ReadCache, model_scope
from mlcp.registry.domain import Transition
from mlcp.runtime import Tx
from mlcp.runtime.telemetry import current_traceparent

log = logging.getLogger(__name__)


class UnknownVersion(LookupError):
    """An event names a version the registry never registered (retried, then dead-lettered)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _facts(schema: Any, code_version: Any, entrypoint: Any, params: Any) -> domain.VersionFacts:
    pairs = tuple((str(f["name"]), str(f["dtype"])) for f in schema)
    return domain.VersionFacts(pairs, code_version, entrypoint, dict(params))


async def apply(
    tx: Tx,
    model: str,
    transition: Transition,
    *,
    actor: str,
    cause: str,
    now: datetime,
    cause_event_id: str | None,
    cache: ReadCache,
    audit: AuditTrail,
) -> None:
    """Persist a transition, audit it and announce it (ModelPromoted / ModelRolledBack)."""
    if transition.kind == "none":
        return
    # Alias moves and status changes alter what the model's alias lookups return.
    await cache.invalidate(tx.conn, model_scope(model))
    before = dataclasses.asdict(await store.get_rollout(tx.conn, model))
    await store.apply_transition(
        tx.conn,
        model,
        transition,
        actor=actor,
        reason=transition.reason,
        cause_event_id=cause_event_id,
        now=now,
    )
    after = {
        **dataclasses.asdict(transition.rollout),
        "statuses": transition.statuses,
        "moves": [dataclasses.asdict(m) for m in transition.moves],
    }
    for move in transition.moves:
        if transition.kind == "promoted" and move.version is not None:
            await tx.emit(
                ModelPromoted(
                    model=model,
                    version=move.version,
                    alias=move.alias,
                    traffic_percent=move.traffic_percent if move.traffic_percent else 0.0,
                    previous_version=move.previous_version,
                    cause=cause,
                    actor=actor if cause == "manual" else None,
                )
            )
        elif transition.kind == "rolled_back" and move.previous_version is not None:
            await tx.emit(
                ModelRolledBack(
                    model=model,
                    alias=move.alias,
                    from_version=move.previous_version,
                    to_version=move.version,
                    cause=cause,
                    reason=transition.reason,
                    actor=actor if cause == "manual" else None,
                )
            )
        version = move.version or move.previous_version
        await audit.append(
            tx,
            actor=actor,
            action="promotion" if transition.kind == "promoted" else "rollback",
            at=now,
            model=model,
            version=version,
            before=before,
            after={**after, "alias": move.alias},
            cause_event_id=cause_event_id,
        )
    if transition.kind == "rejected":
        for version, status in transition.statuses.items():
            await audit.append(
                tx,
                actor=actor,
                action="rejection",
                at=now,
                model=model,
                version=version,
                before=None,
                after={"status": status, "reason": transition.reason},
                cause_event_id=cause_event_id,
            )


class Handlers:
    """The registry's subscribers; they read the rollout policy from the platform config."""

    def __init__(self, config: PlatformConfig, cache: ReadCache, audit: AuditTrail) -> None:
        self._config = config
        self._cache = cache
        self._audit = audit

    def _policy(self, model: str) -> RolloutPolicy:
        configured = self._config.models.get(model)
        # A model missing from the config still gets the documented default rollout.
        return configured.rollout if configured is not None else RolloutPolicy()

    async def _status(self, tx: Tx, model: str, version: str) -> domain.Status:
        await store.lock_model(tx.conn, model)
        status = await store.version_status(tx.conn, model, version)
        if status is None:
            raise UnknownVersion(f"model {model!r} has no version {version!r}")
        return status

    async def on_run_finished(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Register the run as a candidate version with its SemVer → ModelVersionRegistered."""
        run: RunFinished = event.data
        await store.lock_model(tx.conn, run.model)
        existing = await store.version_of_run(tx.conn, run.model, run.run_id)
        if existing is not None:
            log.info("run %s is already version %s of %s", run.run_id, existing, run.model)
            return
        latest = await store.latest_version(tx.conn, run.model)
        schema = [f.model_dump(mode="json") for f in run.feature_schema]
        new = _facts(schema, run.code_version, run.entrypoint, run.params)
        previous = (
            None
            if latest is None
            else _facts(
                latest["feature_schema"],
                latest["code_version"],
                latest["entrypoint"],
                latest["params"],
            )
        )
        version, bump = domain.next_version(
            None if latest is None else latest["version"], previous, new
        )
        now = _now()
        record = {
            "model": run.model,
            "version": version,
            "run_id": run.run_id,
            "previous_version": None if latest is None else latest["version"],
            "bump": bump,
            "metrics": run.metrics,
            "params": run.params,
            "baseline": None if run.baseline is None else run.baseline.model_dump(mode="json"),
            "datasets": [d.model_dump(mode="json") for d in run.datasets],
            "feature_schema": schema,
            "label": run.label,
            "artifact_uri": run.artifact.uri,
            "artifact_sha256": run.artifact.sha256,
            "artifact_format": run.artifact.format,
            "artifact_size": run.artifact.size_bytes,
            "reference_profile": run.reference_profile.model_dump(mode="json"),
            "code_version": run.code_version,
            "entrypoint": run.entrypoint,
            "environment": run.environment.model_dump(mode="json"),
            "training_reason": run.reason,
            "duration_s": run.duration_s,
            "owner": event.source,
            "cause_event_id": event.id,
            "created_at": now,
            "correlation_id": event.correlationid or event.id,
            "traceparent": current_traceparent(),
        }
        await store.insert_version(tx.conn, record)
        await self._audit.append(
            tx,
            actor=event.source,
            action="registration",
            at=now,
            model=run.model,
            version=version,
            after={
                "status": "candidate",
                "run_id": run.run_id,
                "bump": bump,
                "previous_version": record["previous_version"],
                "artifact_sha256": run.artifact.sha256,
            },
            cause_event_id=event.id,
        )
        await tx.emit(
            ModelVersionRegistered(
                model=run.model,
                version=version,
                run_id=run.run_id,
                previous_version=record["previous_version"],
                bump=bump,
                metrics=run.metrics,
                params=run.params,
                baseline=run.baseline,
                artifact=run.artifact,
                reference_profile=run.reference_profile,
                feature_schema=run.feature_schema,
                label=run.label,
                datasets=run.datasets,
                code_version=run.code_version,
            )
        )

    async def on_gate_passed(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Every gate passed → canary at the policy's percent (or production) → ModelPromoted."""
        data: GatePassed = event.data
        status = await self._status(tx, data.model, data.version)
        rollout = await store.get_rollout(tx.conn, data.model)
        percent = self._policy(data.model).canary_percent
        transition = domain.on_gate_passed(rollout, data.version, status, percent, _now())
        await self._apply(tx, event, data.model, transition, "gate_passed")

    async def on_gate_failed(self, event: CloudEvent[Any], tx: Tx) -> None:
        """A gate failed → the candidate is rejected."""
        data: GateFailed = event.data
        status = await self._status(tx, data.model, data.version)
        rollout = await store.get_rollout(tx.conn, data.model)
        reason = f"gate {data.stage} failed: {data.reason}"[:4096]
        transition = domain.on_gate_failed(rollout, data.version, status, reason)
        await self._apply(tx, event, data.model, transition, "gate_failed")

    async def on_canary_healthy(self, event: CloudEvent[Any], tx: Tx) -> None:
        """The canary baked healthy → production; the old production is the rollback target."""
        data: CanaryHealthy = event.data
        await self._status(tx, data.model, data.version)
        rollout = await store.get_rollout(tx.conn, data.model)
        transition = domain.on_canary_healthy(rollout, data.version, _now())
        await self._apply(tx, event, data.model, transition, "canary_healthy")

    async def on_model_degraded(self, event: CloudEvent[Any], tx: Tx) -> None:
        """A degraded canary is removed; a degraded production returns to the previous one."""
        data: ModelDegraded = event.data
        await self._status(tx, data.model, data.version)
        rollout = await store.get_rollout(tx.conn, data.model)
        window = self._policy(data.model).rollback_window
        transition = domain.on_degraded(rollout, data.version, data.alias, _now(), window)
        if transition.kind != "none":
            crossed = [
                f"{e.metric} {e.observed} {e.operator} {e.threshold}"
                for e in data.evidence
                if e.satisfied
            ]
            reason = f"{transition.reason}: {', '.join(crossed)}" if crossed else transition.reason
            transition = dataclasses.replace(transition, reason=reason[:4096])
        await self._apply(tx, event, data.model, transition, "degraded")

    async def _apply(
        self, tx: Tx, event: CloudEvent[Any], model: str, transition: Transition, cause: str
    ) -> None:
        if transition.kind == "none":
            log.info("%s ignored: %s", event.type, transition.reason)
            return
        await apply(
            tx,
            model,
            transition,
            actor=event.source,
            cause=cause,
            now=_now(),
            cause_event_id=event.id,
            cache=self._cache,
            audit=self._audit,
        )
