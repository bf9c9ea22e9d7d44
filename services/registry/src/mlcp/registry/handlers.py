"""Event handlers of the registry: load → decide (``transitions``) → save → emit, one tx.

Every handler runs inside the runtime's inbox transaction, so a redelivered event is dropped
before it gets here; the business keys (run id, the version's status, the current canary) make
a legitimately re-sent event (new CloudEvents id, same facts) a no-op as well.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mlcp.contracts import (
    CanaryHealthy,
    CloudEvent,
    GateFailed,
    GatePassed,
    ModelDegraded,
    RunFinished,
)
from mlcp.policy.platform import PlatformConfig, RolloutPolicy
from mlcp.registry import transitions
from mlcp.registry.domain import Status
from mlcp.registry.outcome import save_and_emit
from mlcp.registry.ports import Ports
from mlcp.registry.transitions import Cause, Origin, Step
from mlcp.runtime import Tx
from mlcp.runtime.telemetry import current_traceparent

log = logging.getLogger(__name__)


class UnknownVersion(LookupError):
    """An event names a version the registry never registered (retried, then dead-lettered)."""


def _now() -> datetime:
    return datetime.now(UTC)


class Handlers:
    """The registry's subscribers; they read the rollout policy from the platform config."""

    def __init__(
        self, config: PlatformConfig, ports: Ports, clock: Callable[[], datetime] = _now
    ) -> None:
        self._config = config
        self._ports = ports
        self._clock = clock

    def _policy(self, model: str) -> RolloutPolicy:
        configured = self._config.models.get(model)
        # A model missing from the config still gets the documented default rollout.
        return configured.rollout if configured is not None else RolloutPolicy()

    async def _status(self, tx: Tx, model: str, version: str) -> Status:
        # Model row first, then the version: the lock order of every writer (no deadlock).
        await self._ports.versions.lock_model(tx.conn, model)
        status = await self._ports.versions.version_status(tx.conn, model, version)
        if status is None:
            raise UnknownVersion(f"model {model!r} has no version {version!r}")
        return status

    async def on_run_finished(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Register the run as a candidate version with its SemVer → ModelVersionRegistered."""
        run: RunFinished = event.data
        versions = self._ports.versions
        await versions.lock_model(tx.conn, run.model)
        existing = await versions.version_of_run(tx.conn, run.model, run.run_id)
        if existing is not None:
            log.info("run %s is already version %s of %s", run.run_id, existing, run.model)
            return
        registered = transitions.register(
            run,
            await versions.latest_version(tx.conn, run.model),
            owner=event.source,
            cause_event_id=event.id,
            correlation_id=event.correlationid or event.id,
            traceparent=current_traceparent(),
            now=self._clock(),
        )
        await versions.insert_version(tx.conn, registered.version)
        await self._ports.audit.record(tx, registered.audit)
        await tx.emit(registered.event)

    async def on_gate_passed(self, event: CloudEvent[Any], tx: Tx) -> None:
        """Every gate passed → canary at the policy's percent (or production) → ModelPromoted."""
        data: GatePassed = event.data
        status = await self._status(tx, data.model, data.version)
        rollout = await self._ports.rollouts.get_rollout(tx.conn, data.model)
        step = transitions.gate_passed(
            rollout,
            data,
            status,
            self._policy(data.model),
            _origin(event, "gate_passed"),
            self._clock(),
        )
        await self._save(event, tx, step)

    async def on_gate_failed(self, event: CloudEvent[Any], tx: Tx) -> None:
        """A gate failed → the candidate is rejected."""
        data: GateFailed = event.data
        status = await self._status(tx, data.model, data.version)
        rollout = await self._ports.rollouts.get_rollout(tx.conn, data.model)
        origin = _origin(event, "gate_failed")
        step = transitions.gate_failed(rollout, data, status, origin, self._clock())
        await self._save(event, tx, step)

    async def on_canary_healthy(self, event: CloudEvent[Any], tx: Tx) -> None:
        """The canary baked healthy → production; the old production is the rollback target."""
        data: CanaryHealthy = event.data
        await self._status(tx, data.model, data.version)
        rollout = await self._ports.rollouts.get_rollout(tx.conn, data.model)
        origin = _origin(event, "canary_healthy")
        step = transitions.canary_healthy(rollout, data, origin, self._clock())
        await self._save(event, tx, step)

    async def on_model_degraded(self, event: CloudEvent[Any], tx: Tx) -> None:
        """A degraded canary is removed; a degraded production returns to the previous one."""
        data: ModelDegraded = event.data
        await self._status(tx, data.model, data.version)
        rollout = await self._ports.rollouts.get_rollout(tx.conn, data.model)
        policy, origin = self._policy(data.model), _origin(event, "degraded")
        step = transitions.degraded(rollout, data, policy, origin, self._clock())
        await self._save(event, tx, step)

    async def _save(self, event: CloudEvent[Any], tx: Tx, step: Step) -> None:
        if not step.changes:
            log.info("%s ignored: %s", event.type, step.transition.reason)
            return
        await save_and_emit(tx, step, self._ports)


def _origin(event: CloudEvent[Any], cause: Cause) -> Origin:
    """Actions caused by an event are recorded with its source as actor and its id as cause."""
    return Origin(actor=event.source, cause=cause, event_id=event.id)
