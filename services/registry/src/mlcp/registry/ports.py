"""The interfaces the registry's handlers and API depend on, so that their decisions can be
tested against in-memory stand-ins (``tests/fakes/registry.py``).

The modules of ``mlcp.registry.store`` implement ``Versions`` and ``Rollouts`` (a module
satisfies a protocol of functions); ``audit.AuditTrail`` implements ``AuditLog`` and
``cache.ReadCache`` implements ``CacheInvalidator``. Every method takes the caller's connection
(``tx.conn``) and runs in the caller's transaction. The API's read-only routes (lists, lookups,
the audit log) query the store modules directly: they decide nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from mlcp.registry.domain import AuditEntry, ModelVersion, Status
from mlcp.registry.transitions import Rollout, Transition
from mlcp.runtime.consumer import Tx
from mlcp.runtime.db import Conn


class Versions(Protocol):
    """Models and their versions."""

    async def lock_model(self, conn: Conn, model: str) -> None:
        """Create the model if new and lock it until the transaction ends."""

    async def lock_existing_model(self, conn: Conn, model: str) -> bool:
        """Lock a known model; False if it is unknown."""

    async def version_of_run(self, conn: Conn, model: str, run_id: str) -> str | None:
        """The version registered from ``run_id``, if any."""

    async def latest_version(self, conn: Conn, model: str) -> ModelVersion | None:
        """The model's highest version (SemVer order), if any."""

    async def insert_version(self, conn: Conn, v: ModelVersion) -> None:
        """Store a new candidate version."""

    async def version_status(self, conn: Conn, model: str, version: str) -> Status | None:
        """A version's status, locked until the transaction ends (None if unknown)."""


class Rollouts(Protocol):
    """A model's rollout state and its aliases."""

    async def get_rollout(self, conn: Conn, model: str) -> Rollout:
        """The model's rollout state (empty when nothing was ever promoted)."""

    async def get_aliases(self, conn: Conn, model: str) -> dict[str, str]:
        """alias → version for every alias the model has now."""

    async def apply_transition(
        self,
        conn: Conn,
        model: str,
        transition: Transition,
        *,
        actor: str,
        reason: str,
        cause_event_id: str | None,
        now: datetime,
    ) -> None:
        """Save a transition: statuses, rollout state, alias moves and their history."""


class AuditLog(Protocol):
    """The audit chain."""

    async def record(self, tx: Tx, entry: AuditEntry, *, correlationid: str | None = None) -> int:
        """Append ``entry`` in ``tx`` (with its signed checkpoint); its seq."""


class CacheInvalidator(Protocol):
    """The read cache's invalidation, part of the writer's transaction."""

    async def invalidate(self, conn: Any, *scopes: str) -> None:
        """Drop every cached answer of ``scopes`` when the transaction commits."""


@dataclass(frozen=True)
class Ports:
    """What a decision of the registry loads from and saves to."""

    versions: Versions
    rollouts: Rollouts
    audit: AuditLog
    cache: CacheInvalidator
