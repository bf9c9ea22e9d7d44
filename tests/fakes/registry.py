"""In-memory stand-ins for the registry's ports (``mlcp.registry.ports``): its stores, audit log
and cache invalidation, so that every handler decision runs in milliseconds.

Each fake keeps what it was given in plain attributes for the test to read; it implements the
contract of the real one (the registry's integration tests check those against PostgreSQL),
not its SQL.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import semver

from mlcp.registry.domain import AuditEntry, ModelVersion, Status
from mlcp.registry.ports import Ports
from mlcp.registry.transitions import AliasMove, Rollout, Transition
from mlcp.runtime.consumer import Tx


@dataclass(frozen=True)
class AliasChange:
    """One row of the alias history, as ``apply_transition`` writes it."""

    model: str
    move: AliasMove
    actor: str
    reason: str
    cause_event_id: str | None
    at: datetime


class FakeStore:
    """Models, versions, rollouts and aliases in dicts (implements ``Versions`` and
    ``Rollouts``; locks are no-ops, the fake is used by one task at a time)."""

    def __init__(self) -> None:
        self.models: set[str] = set()
        self.versions: dict[tuple[str, str], ModelVersion] = {}
        self.rollouts: dict[str, Rollout] = {}
        self.aliases: dict[str, dict[str, str]] = {}
        self.history: list[AliasChange] = []

    # -- Versions ---------------------------------------------------------------------------------
    async def lock_model(self, conn: Any, model: str) -> None:
        self.models.add(model)

    async def lock_existing_model(self, conn: Any, model: str) -> bool:
        return model in self.models

    async def version_of_run(self, conn: Any, model: str, run_id: str) -> str | None:
        found = [v.version for v in self.of(model) if v.run_id == run_id]
        return found[0] if found else None

    async def latest_version(self, conn: Any, model: str) -> ModelVersion | None:
        return max(self.of(model), key=lambda v: semver.Version.parse(v.version), default=None)

    async def insert_version(self, conn: Any, v: ModelVersion) -> None:
        key = (v.model, v.version)
        if key in self.versions or any(o.run_id == v.run_id for o in self.of(v.model)):
            raise AssertionError(f"duplicate version {key} (the table's keys refuse it)")
        self.versions[key] = v

    async def version_status(self, conn: Any, model: str, version: str) -> Status | None:
        found = self.versions.get((model, version))
        return None if found is None else found.status

    # -- Rollouts ---------------------------------------------------------------------------------
    async def get_rollout(self, conn: Any, model: str) -> Rollout:
        return self.rollouts.get(model, Rollout())

    async def get_aliases(self, conn: Any, model: str) -> dict[str, str]:
        return dict(self.aliases.get(model, {}))

    async def apply_transition(
        self,
        conn: Any,
        model: str,
        transition: Transition,
        *,
        actor: str,
        reason: str,
        cause_event_id: str | None,
        now: datetime,
    ) -> None:
        for version, status in transition.statuses.items():
            old = self.versions[(model, version)]
            if old.status != status:
                self.versions[(model, version)] = dataclasses.replace(
                    old, status=status, status_changed_at=now
                )
        self.rollouts[model] = transition.rollout
        aliases = self.aliases.setdefault(model, {})
        for move in transition.moves:
            self.history.append(AliasChange(model, move, actor, reason, cause_event_id, now))
            if move.version is None:
                aliases.pop(move.alias, None)
            else:
                aliases[move.alias] = move.version

    # -- for the tests ----------------------------------------------------------------------------
    def of(self, model: str) -> list[ModelVersion]:
        """The model's versions, in registration order."""
        return [v for (m, _), v in self.versions.items() if m == model]

    def status(self, model: str, version: str) -> Status:
        """A version's status (KeyError if it was never registered)."""
        return self.versions[(model, version)].status


class FakeAuditLog:
    """The audit chain as a list (implements ``AuditLog``; no hashes, no checkpoints)."""

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    async def record(self, tx: Tx, entry: AuditEntry, *, correlationid: str | None = None) -> int:
        self.entries.append(entry)
        return len(self.entries)

    def actions(self) -> list[str]:
        """The actions recorded, in order."""
        return [e.action for e in self.entries]


@dataclass
class FakeCache:
    """Records the scopes a writer invalidated (implements ``CacheInvalidator``)."""

    invalidated: list[str] = field(default_factory=list)

    async def invalidate(self, conn: Any, *scopes: str) -> None:
        self.invalidated.extend(scopes)


@dataclass
class FakeRegistry:
    """Every fake of the registry, and the ``Ports`` that hand them to handlers and routes."""

    store: FakeStore = field(default_factory=FakeStore)
    audit: FakeAuditLog = field(default_factory=FakeAuditLog)
    cache: FakeCache = field(default_factory=FakeCache)

    @property
    def ports(self) -> Ports:
        return Ports(versions=self.store, rollouts=self.store, audit=self.audit, cache=self.cache)
