"""Pure decisions of the registry: SemVer bumps, promotions, rollbacks, permissions.

Nothing here touches Kafka, SQL or HTTP: every function takes plain values and returns a decision
(or raises ``Conflict``), so the rules are testable on their own and the handlers and the API
apply the same ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import semver

Status = Literal["candidate", "approved", "rejected", "canary", "production", "archived"]
STATUSES: tuple[Status, ...] = (
    "candidate",
    "approved",
    "rejected",
    "canary",
    "production",
    "archived",
)
Bump = Literal["major", "minor", "patch"]

CANARY = "canary"
PRODUCTION = "production"
FIRST_VERSION = "1.0.0"


class Conflict(Exception):
    """The request contradicts the current state (HTTP 409; for events: nothing to do)."""


# --- lineage -----------------------------------------------------------------------------------


def lineage_datasets(datasets: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The data of a version's lineage: each dataset with every batch (uri, rows, sha256 and
    re-announcements). A version registered from a run that reported only batch ids lists them
    with null facts, so a reader always finds one entry per batch."""
    out = []
    for d in datasets:
        batches = list(d.get("batches") or ())
        if not batches:
            batches = [
                {"batch_id": b, "uri": None, "rows": None, "sha256": None, "duplicates": None}
                for b in d.get("batch_ids") or ()
            ]
        out.append({**d, "batches": batches})
    return out


# --- SemVer ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionFacts:
    """What decides a version bump: the feature schema, the training code, its parameters."""

    feature_schema: tuple[tuple[str, str], ...]
    """Ordered (name, dtype) pairs; any change (name, dtype, order, count) is a new contract."""
    code_version: str | None
    entrypoint: str | None
    params: Mapping[str, Any]


def bump_kind(previous: VersionFacts, new: VersionFacts) -> Bump:
    """Feature schema changed → major; code or parameters changed → minor; otherwise patch.

    "Otherwise" is a retrain on new data (or the same data again): callers that serve the
    version need no change, so it is a patch.
    """
    if previous.feature_schema != new.feature_schema:
        return "major"
    if (
        previous.code_version != new.code_version
        or previous.entrypoint != new.entrypoint
        or dict(previous.params) != dict(new.params)
    ):
        return "minor"
    return "patch"


def next_version(
    latest: str | None, previous: VersionFacts | None, new: VersionFacts
) -> tuple[str, Bump | None]:
    """The SemVer of a new version after ``latest`` (None: the model's first version, 1.0.0)."""
    if latest is None or previous is None:
        return FIRST_VERSION, None
    kind = bump_kind(previous, new)
    current = semver.Version.parse(latest)
    bumped = {
        "major": current.bump_major,
        "minor": current.bump_minor,
        "patch": current.bump_patch,
    }[kind]()
    return str(bumped), kind


# --- rollout state and its transitions ---------------------------------------------------------


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


# --- manual actions (API) ----------------------------------------------------------------------


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


# --- RBAC --------------------------------------------------------------------------------------

Role = Literal["viewer", "operator", "approver", "admin", "auditor"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "approver", "admin", "auditor")
Permission = Literal[
    "read", "promote", "rollback", "approve", "report_check", "audit_read", "manage_tokens"
]
PERMISSIONS: tuple[Permission, ...] = (
    "read",
    "promote",
    "rollback",
    "approve",
    "report_check",
    "audit_read",
    "manage_tokens",
)

# Least privilege: each role adds only what its job needs on top of reading. The approver
# cannot move aliases and the operator cannot approve (separation of duties); only the auditor
# and the admin read the audit log; only the admin manages tokens and grants.
ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "viewer": frozenset({"read"}),
    "operator": frozenset({"read", "promote", "rollback", "report_check"}),
    "approver": frozenset({"read", "approve"}),
    "auditor": frozenset({"read", "audit_read"}),
    "admin": frozenset(PERMISSIONS),
}


def allowed(roles: Sequence[str], permission: Permission) -> bool:
    """Whether any of ``roles`` carries ``permission`` (an unknown role grants nothing)."""
    return any(permission in ROLE_PERMISSIONS.get(r, frozenset()) for r in roles)


def active_roles(
    grants: Sequence[tuple[str, datetime | None, datetime | None]], now: datetime
) -> list[str]:
    """Roles of (role, expires_at, revoked_at) grants that are neither expired nor revoked."""
    return sorted(
        {
            role
            for role, expires, revoked in grants
            if revoked is None and (expires is None or expires > now)
        }
    )
