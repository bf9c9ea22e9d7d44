"""The decisions that move a model's state, shared by the Kafka handlers and the HTTP API.

Each decision takes the state it needs (the model's rollout, a version's status, its aliases),
the event or command, who caused it (``Origin``) and the clock, and returns a ``Step``: the
transition to save, the audit rows to append and the events to emit. Nothing here touches
Kafka, SQL or HTTP; the callers load, decide here, then save and emit (``outcome.save_and_emit``).
A decision that changes nothing returns a ``Step`` whose ``changes`` is False, with the reason.

Two layers: the rules of the rollout state (``on_gate_passed``, ``on_canary_healthy``,
``on_degraded``, ``manual_promote`` … → a ``Transition``), and the decisions the callers use
(``register``, ``gate_passed``, ``gate_failed``, ``canary_healthy``, ``degraded``, ``promote``,
``rollback`` → a ``Step``), which apply a rule and add what it means for the audit chain and
the bus (``settle``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from mlcp.contracts import (
    CanaryHealthy,
    EventData,
    GateFailed,
    GatePassed,
    ModelDegraded,
    ModelPromoted,
    ModelRolledBack,
    ModelVersionRegistered,
    RunFinished,
)
from mlcp.policy.platform import RolloutPolicy
from mlcp.registry.domain import AuditEntry, Conflict, ModelVersion, Status, next_version

CANARY = "canary"
PRODUCTION = "production"
REASON_LIMIT = 4096
"""Longest reason stored and announced (the contracts' text limit)."""

Cause = Literal["gate_passed", "gate_failed", "canary_healthy", "degraded", "manual"]

# --- rollout state and its rules ---------------------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    """Which versions serve a model right now, and where production would roll back to."""

    canary: str | None = None
    canary_percent: float | None = None
    production: str | None = None
    production_since: datetime | None = None
    rollback_target: str | None = None
    """The production version before the current one (still loadable): the rollback target."""


@dataclass(frozen=True)
class AliasMove:
    """One alias changing hands: ``version`` None removes the alias."""

    alias: str
    version: str | None
    previous_version: str | None
    traffic_percent: float | None


@dataclass(frozen=True)
class Transition:
    """The outcome of a decision: new rollout, status changes, alias moves, what to announce."""

    rollout: Rollout
    statuses: dict[str, Status] = field(default_factory=dict)
    """version → its new status."""
    moves: tuple[AliasMove, ...] = ()
    kind: Literal["promoted", "rolled_back", "rejected", "none"] = "none"
    reason: str = ""


def _to_production(
    rollout: Rollout, version: str, now: datetime, statuses: dict[str, Status]
) -> tuple[Rollout, list[AliasMove]]:
    moves: list[AliasMove] = []
    old = rollout.production
    if old is not None and old != version:
        statuses[old] = "archived"
    canary = rollout.canary
    if canary == version:
        moves.append(AliasMove(CANARY, None, version, None))
        canary = None
    moves.append(AliasMove(PRODUCTION, version, old, 100.0))
    statuses[version] = "production"
    new = Rollout(
        canary=canary,
        canary_percent=rollout.canary_percent if canary else None,
        production=version,
        production_since=now,
        rollback_target=old if old != version else rollout.rollback_target,
    )
    return new, moves


def on_gate_passed(
    rollout: Rollout, version: str, status: Status, canary_percent: float, now: datetime
) -> Transition:
    """A version passed every gate: canary at the policy's percent, or production when it is 0.

    A version that is no longer a candidate (already promoted, rejected by a person meanwhile)
    is left alone: a late or repeated GatePassed must not resurrect it.
    """
    if status not in ("candidate", "approved"):
        return Transition(rollout, reason=f"version {version} is {status}, not a candidate")
    statuses: dict[str, Status] = {}
    if canary_percent <= 0:
        new, moves = _to_production(rollout, version, now, statuses)
        return Transition(new, statuses, tuple(moves), "promoted", "no canary step in the policy")
    if rollout.canary is not None and rollout.canary != version:
        # A newer candidate replaces the canary under test; the old one stays approved.
        statuses[rollout.canary] = "approved"
    statuses[version] = "canary"
    move = AliasMove(CANARY, version, rollout.canary, float(canary_percent))
    new = Rollout(
        canary=version,
        canary_percent=float(canary_percent),
        production=rollout.production,
        production_since=rollout.production_since,
        rollback_target=rollout.rollback_target,
    )
    return Transition(new, statuses, (move,), "promoted", "gates passed")


def on_gate_failed(rollout: Rollout, version: str, status: Status, reason: str) -> Transition:
    """A gate failed: a candidate becomes rejected (serving versions are not touched)."""
    if status not in ("candidate", "approved"):
        return Transition(rollout, reason=f"version {version} is {status}; left as is")
    return Transition(rollout, {version: "rejected"}, (), "rejected", reason)


def on_canary_healthy(rollout: Rollout, version: str, now: datetime) -> Transition:
    """The canary baked healthy: it becomes production; the old production is the rollback target.

    Only the current canary is promoted; a stale report about a replaced canary is ignored.
    """
    if rollout.canary != version:
        return Transition(rollout, reason=f"{version} is not the canary ({rollout.canary})")
    statuses: dict[str, Status] = {}
    new, moves = _to_production(rollout, version, now, statuses)
    return Transition(new, statuses, tuple(moves), "promoted", "canary healthy")


def on_degraded(
    rollout: Rollout, version: str, alias: str, now: datetime, rollback_window: timedelta
) -> Transition:
    """Roll back a degraded version: drop the canary, or restore the previous production.

    Production goes back only inside the rollback window and only to a known previous version;
    anything else (a stale report, no target, the window over) changes nothing.
    """
    if alias == CANARY:
        if rollout.canary != version:
            return Transition(rollout, reason=f"{version} is not the canary ({rollout.canary})")
        new = Rollout(
            production=rollout.production,
            production_since=rollout.production_since,
            rollback_target=rollout.rollback_target,
        )
        move = AliasMove(CANARY, None, version, None)
        return Transition(new, {version: "rejected"}, (move,), "rolled_back", "canary degraded")
    if rollout.production != version:
        return Transition(rollout, reason=f"{version} is not production ({rollout.production})")
    if rollout.rollback_target is None:
        return Transition(rollout, reason="no previous production version to roll back to")
    since = rollout.production_since
    if since is not None and now - since > rollback_window:
        return Transition(rollout, reason=f"outside the rollback window ({rollback_window})")
    return _restore(rollout, version, "rejected", "production degraded", now)


def _restore(
    rollout: Rollout, version: str, old_status: Status, reason: str, now: datetime
) -> Transition:
    target = rollout.rollback_target
    assert target is not None
    new = Rollout(
        canary=rollout.canary,
        canary_percent=rollout.canary_percent,
        production=target,
        production_since=now,
        rollback_target=None,
    )
    move = AliasMove(PRODUCTION, target, version, 100.0)
    statuses: dict[str, Status] = {version: old_status, target: "production"}
    return Transition(new, statuses, (move,), "rolled_back", reason)


# --- rules of manual actions (API) ------------------------------------------------------------


def manual_promote(
    rollout: Rollout,
    aliases: Mapping[str, str],
    version: str,
    status: Status,
    alias: str,
    now: datetime,
    traffic_percent: float | None = None,
) -> Transition:
    """An operator points ``alias`` at ``version``; ``Conflict`` when that cannot be right.

    Rejected versions are never served; an alias already on the version is a conflict (the
    caller may be acting on stale state).
    """
    if status == "rejected":
        raise Conflict(f"version {version} is rejected and cannot be promoted")
    if aliases.get(alias) == version:
        raise Conflict(f"alias {alias!r} already points to {version}")
    if alias == PRODUCTION:
        statuses: dict[str, Status] = {}
        new, moves = _to_production(rollout, version, now, statuses)
        return Transition(new, statuses, tuple(moves), "promoted", "manual promotion")
    if alias == CANARY:
        if rollout.production == version:
            raise Conflict(f"version {version} is already production")
        percent = 10.0 if traffic_percent is None else traffic_percent
        return on_gate_passed(rollout, version, "approved", percent, now)
    move = AliasMove(alias, version, aliases.get(alias), traffic_percent)
    return Transition(rollout, {}, (move,), "promoted", "manual promotion")


def manual_rollback(
    rollout: Rollout, aliases: Mapping[str, str], alias: str, now: datetime
) -> Transition:
    """An operator rolls ``alias`` back: canary removed, production to its rollback target."""
    current = aliases.get(alias)
    if current is None:
        raise Conflict(f"alias {alias!r} points to no version")
    if alias == CANARY:
        new = Rollout(
            production=rollout.production,
            production_since=rollout.production_since,
            rollback_target=rollout.rollback_target,
        )
        move = AliasMove(CANARY, None, current, None)
        return Transition(new, {current: "approved"}, (move,), "rolled_back", "manual rollback")
    if alias == PRODUCTION:
        if rollout.rollback_target is None:
            raise Conflict("production has no previous version to roll back to")
        return _restore(rollout, current, "archived", "manual rollback", now)
    move = AliasMove(alias, None, current, None)
    return Transition(rollout, {}, (move,), "rolled_back", "manual rollback")


# --- what a decision produces ------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """Who or what caused a decision: the actor recorded, the cause announced, the cause event
    (None for a person's API call)."""

    actor: str
    cause: Cause
    event_id: str | None = None


@dataclass(frozen=True)
class Step:
    """One decision about a model: the transition to save, then the audit rows to append and
    the events to emit, in order."""

    model: str
    transition: Transition
    origin: Origin
    at: datetime
    """The decision's clock: when its rows are stamped."""
    audit: tuple[AuditEntry, ...] = ()
    events: tuple[EventData, ...] = ()

    @property
    def changes(self) -> bool:
        """Whether there is anything to save (else ``transition.reason`` says why not)."""
        return self.transition.kind != "none"


@dataclass(frozen=True)
class Registration:
    """A run registered as a new version: the row to insert, its audit row, its event."""

    version: ModelVersion
    audit: AuditEntry
    event: ModelVersionRegistered


def settle(
    model: str, before: Rollout, transition: Transition, origin: Origin, now: datetime
) -> Step:
    """The audit rows and events of ``transition``: per alias move a ModelPromoted (or a
    ModelRolledBack) and a promotion (rollback) row; per rejected version a rejection row."""
    if transition.kind == "none":
        return Step(model, transition, origin, now)
    manual_actor = origin.actor if origin.cause == "manual" else None
    after = {
        **dataclasses.asdict(transition.rollout),
        "statuses": transition.statuses,
        "moves": [dataclasses.asdict(m) for m in transition.moves],
    }
    events: list[EventData] = []
    audit: list[AuditEntry] = []
    for move in transition.moves:
        if transition.kind == "promoted" and move.version is not None:
            events.append(
                ModelPromoted(
                    model=model,
                    version=move.version,
                    alias=move.alias,
                    traffic_percent=move.traffic_percent if move.traffic_percent else 0.0,
                    previous_version=move.previous_version,
                    cause=origin.cause,
                    actor=manual_actor,
                )
            )
        elif transition.kind == "rolled_back" and move.previous_version is not None:
            events.append(
                ModelRolledBack(
                    model=model,
                    alias=move.alias,
                    from_version=move.previous_version,
                    to_version=move.version,
                    cause=origin.cause,
                    reason=transition.reason,
                    actor=manual_actor,
                )
            )
        audit.append(
            AuditEntry(
                actor=origin.actor,
                action="promotion" if transition.kind == "promoted" else "rollback",
                at=now,
                model=model,
                version=move.version or move.previous_version,
                before=dataclasses.asdict(before),
                after={**after, "alias": move.alias},
                cause_event_id=origin.event_id,
            )
        )
    if transition.kind == "rejected":
        for version, status in transition.statuses.items():
            audit.append(
                AuditEntry(
                    actor=origin.actor,
                    action="rejection",
                    at=now,
                    model=model,
                    version=version,
                    after={"status": status, "reason": transition.reason},
                    cause_event_id=origin.event_id,
                )
            )
    return Step(model, transition, origin, now, tuple(audit), tuple(events))


# --- decisions on events -----------------------------------------------------------------------


def register(
    run: RunFinished,
    latest: ModelVersion | None,
    *,
    owner: str,
    cause_event_id: str,
    correlation_id: str,
    traceparent: str | None,
    now: datetime,
) -> Registration:
    """A finished run becomes the model's next version (SemVer from what changed against the
    ``latest`` registered one), a candidate."""
    schema = [f.model_dump(mode="json") for f in run.feature_schema]
    record = ModelVersion(
        model=run.model,
        version="",
        run_id=run.run_id,
        previous_version=None if latest is None else latest.version,
        bump=None,
        status="candidate",
        metrics=dict(run.metrics),
        params=dict(run.params),
        baseline=None if run.baseline is None else run.baseline.model_dump(mode="json"),
        datasets=[d.model_dump(mode="json") for d in run.datasets],
        feature_schema=schema,
        label=run.label,
        artifact_uri=run.artifact.uri,
        artifact_sha256=run.artifact.sha256,
        artifact_format=run.artifact.format,
        artifact_size=run.artifact.size_bytes,
        reference_profile=run.reference_profile.model_dump(mode="json"),
        code_version=run.code_version,
        entrypoint=run.entrypoint,
        environment=run.environment.model_dump(mode="json"),
        training_reason=run.reason,
        duration_s=run.duration_s,
        owner=owner,
        cause_event_id=cause_event_id,
        created_at=now,
        status_changed_at=now,
        correlation_id=correlation_id,
        traceparent=traceparent,
    )
    version, bump = next_version(
        None if latest is None else latest.version,
        None if latest is None else latest.facts(),
        record.facts(),
    )
    record = dataclasses.replace(record, version=version, bump=bump)
    audit = AuditEntry(
        actor=owner,
        action="registration",
        at=now,
        model=run.model,
        version=version,
        after={
            "status": "candidate",
            "run_id": run.run_id,
            "bump": bump,
            "previous_version": record.previous_version,
            "artifact_sha256": run.artifact.sha256,
        },
        cause_event_id=cause_event_id,
    )
    event = ModelVersionRegistered(
        model=run.model,
        version=version,
        run_id=run.run_id,
        previous_version=record.previous_version,
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
    return Registration(record, audit, event)


def gate_passed(
    rollout: Rollout,
    event: GatePassed,
    status: Status,
    policy: RolloutPolicy,
    origin: Origin,
    now: datetime,
) -> Step:
    """Every gate passed: canary at the policy's percent, or production (``on_gate_passed``)."""
    transition = on_gate_passed(rollout, event.version, status, policy.canary_percent, now)
    return settle(event.model, rollout, transition, origin, now)


def gate_failed(
    rollout: Rollout, event: GateFailed, status: Status, origin: Origin, now: datetime
) -> Step:
    """A gate failed: the candidate is rejected, with the stage and its reason."""
    reason = f"gate {event.stage} failed: {event.reason}"[:REASON_LIMIT]
    transition = on_gate_failed(rollout, event.version, status, reason)
    return settle(event.model, rollout, transition, origin, now)


def canary_healthy(rollout: Rollout, event: CanaryHealthy, origin: Origin, now: datetime) -> Step:
    """The canary baked healthy: production (``on_canary_healthy``)."""
    transition = on_canary_healthy(rollout, event.version, now)
    return settle(event.model, rollout, transition, origin, now)


def degraded(
    rollout: Rollout, event: ModelDegraded, policy: RolloutPolicy, origin: Origin, now: datetime
) -> Step:
    """A degraded version is rolled back (``on_degraded``); the reason names the limits crossed."""
    transition = on_degraded(rollout, event.version, event.alias, now, policy.rollback_window)
    if transition.kind != "none":
        crossed = [
            f"{e.metric} {e.observed} {e.operator} {e.threshold}"
            for e in event.evidence
            if e.satisfied
        ]
        reason = f"{transition.reason}: {', '.join(crossed)}" if crossed else transition.reason
        transition = dataclasses.replace(transition, reason=reason[:REASON_LIMIT])
    return settle(event.model, rollout, transition, origin, now)


# --- decisions on commands (API) ---------------------------------------------------------------


def promote(
    model: str,
    rollout: Rollout,
    aliases: Mapping[str, str],
    *,
    version: str,
    status: Status,
    alias: str,
    traffic_percent: float | None,
    reason: str | None,
    origin: Origin,
    now: datetime,
) -> Step:
    """An operator points ``alias`` at ``version`` (``manual_promote``; ``Conflict`` if wrong)."""
    transition = manual_promote(rollout, aliases, version, status, alias, now, traffic_percent)
    if reason:
        transition = dataclasses.replace(transition, reason=reason)
    return settle(model, rollout, transition, origin, now)


def rollback(
    model: str,
    rollout: Rollout,
    aliases: Mapping[str, str],
    *,
    alias: str,
    reason: str | None,
    origin: Origin,
    now: datetime,
) -> Step:
    """An operator rolls ``alias`` back (``manual_rollback``; ``Conflict`` if nowhere to go)."""
    transition = manual_rollback(rollout, aliases, alias, now)
    if reason:
        transition = dataclasses.replace(transition, reason=reason)
    return settle(model, rollout, transition, origin, now)
