"""The registry's vocabulary and its rules that do not move state: statuses, the typed version
record, SemVer bumps, lineage, permissions.

Nothing here touches Kafka, SQL or HTTP. The decisions that move a model's state (registering
a version, promotions, rollbacks) are in ``transitions.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import semver

Status = Literal["candidate", "approved", "rejected", "canary", "production", "archived"]
Bump = Literal["major", "minor", "patch"]

FIRST_VERSION = "1.0.0"


class Conflict(Exception):
    """The request contradicts the current state (HTTP 409; for events: nothing to do)."""


# --- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelVersion:
    """One registered version with its standard metadata: a row of ``versions``.

    JSON columns hold plain JSON values (what a client of the API reads back)."""

    model: str
    version: str
    run_id: str
    previous_version: str | None
    bump: Bump | None
    status: Status
    metrics: dict[str, Any]
    params: dict[str, Any]
    baseline: dict[str, Any] | None
    datasets: list[dict[str, Any]]
    feature_schema: list[dict[str, Any]]
    label: str | None
    artifact_uri: str
    artifact_sha256: str
    artifact_format: str
    artifact_size: int | None
    reference_profile: dict[str, Any]
    code_version: str | None
    entrypoint: str | None
    environment: dict[str, Any] | None
    training_reason: str | None
    duration_s: float | None
    owner: str
    """Who reported the run (the RunFinished event's source)."""
    cause_event_id: str | None
    created_at: datetime
    status_changed_at: datetime
    correlation_id: str | None = None
    """The lifecycle it was registered in (approvals and checks resume it)."""
    traceparent: str | None = None

    def facts(self) -> VersionFacts:
        """What decides the bump of the version after this one."""
        return version_facts(self.feature_schema, self.code_version, self.entrypoint, self.params)


@dataclass(frozen=True)
class AuditEntry:
    """A governance action to append to the audit chain (``audit.AuditTrail.record``)."""

    actor: str
    action: str
    at: datetime
    model: str | None = None
    version: str | None = None
    before: Any = None
    after: Any = None
    cause_event_id: str | None = None


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


def version_facts(
    feature_schema: Sequence[Mapping[str, Any]],
    code_version: str | None,
    entrypoint: str | None,
    params: Mapping[str, Any],
) -> VersionFacts:
    """The facts of a version from its feature schema as JSON (``[{name, dtype, ...}]``)."""
    pairs = tuple((str(f["name"]), str(f["dtype"])) for f in feature_schema)
    return VersionFacts(pairs, code_version, entrypoint, dict(params))


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
