"""The monitor's stores as interfaces, one per aggregate, with the records they hold.

Handlers see only these protocols: ``stores.postgres`` implements them on the transaction's
connection (SQL, schema ``monitor``), ``tests/fakes/monitor.py`` in memory for unit tests.
A handler opens its stores once per transaction: ``open_stores(tx.conn)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mlcp.monitor.domain import Lifecycle, NewWatch, Traffic, TrafficStats, Watch
from mlcp.monitor.drift import Chunk
from mlcp.policy.target import Target


@dataclass(frozen=True)
class VersionInfo:
    """What the monitor keeps of a registered version."""

    reference_profile: dict[str, Any]
    metrics: dict[str, float]
    lifecycle: Lifecycle


@dataclass(frozen=True)
class PredictionRows:
    """A version's predictions of one batch, as columns, numbered ``first_n``… in arrival order."""

    first_n: int
    request_ids: list[str]
    ts: list[datetime]
    latency_ms: npt.NDArray[np.float64]
    error: npt.NDArray[np.bool_]
    prediction: list[str | None]
    """The prediction's key under the model's target; None for a failed request."""


@dataclass(frozen=True)
class FeedbackRows:
    """True labels of one batch for one model, as columns (labels as keys of its target)."""

    request_ids: list[str]
    labels: list[str]
    ts: list[datetime]


class VersionStore(Protocol):
    """Registered versions: reference profile, offline metrics, lifecycle."""

    async def add(
        self, model: str, version: str, info: VersionInfo, registered_at: datetime
    ) -> bool:
        """Keep a version; False if it was known (the first registration's facts stay)."""

    async def get(self, model: str, version: str) -> VersionInfo | None:
        """A registered version, or None."""


class AliasStore(Protocol):
    """Which version each alias of a model points at."""

    async def set(self, model: str, alias: str, version: str, since: datetime) -> None:
        """Point ``alias`` at ``version``."""

    async def drop(self, model: str, alias: str, version: str) -> None:
        """Remove ``alias`` if it still points at ``version``."""

    async def version(self, model: str, alias: str) -> str | None:
        """The version behind ``alias``, if any."""

    async def of(self, model: str, version: str) -> list[str]:
        """The aliases pointing at ``version`` (production first)."""


class TrafficStore(Protocol):
    """Each version's prediction count, open drift window and the window's encoded rows."""

    async def lock(self, model: str, version: str) -> Traffic:
        """The version's traffic, locked until the transaction ends (created if new). Callers
        lock versions in sorted order, before any watch: no deadlock cycles."""

    async def served(self, model: str, version: str) -> int:
        """Predictions of a version ingested so far."""

    async def save(self, model: str, version: str, traffic: Traffic) -> None:
        """Store the new count and open window."""

    async def add_chunk(self, model: str, version: str, seq: int, chunk: Chunk) -> None:
        """Append rows to the open window ``seq``."""

    async def take_chunks(self, model: str, version: str, seq: int) -> list[Chunk]:
        """Remove and return a closing window's chunks, in arrival order."""


class WatchStore(Protocol):
    """Canary bakes and production rollback windows."""

    async def open(self, model: str) -> list[Watch]:
        """The model's open watches, locked, oldest first."""

    async def start(self, watch: NewWatch) -> int:
        """Open a watch (the caller ended any open watch of its alias); its id."""

    async def end_alias(
        self, model: str, alias: str, outcome: str, at: datetime, version: str | None = None
    ) -> None:
        """End the open watch of ``alias`` (only if it watches ``version``, when given)."""

    async def end(self, watch_id: int, outcome: str, at: datetime) -> None:
        """End one watch."""

    async def advance(self, watch_id: int, next_window: int) -> None:
        """Remember which production window is judged next."""


class ObservationStore(Protocol):
    """Predictions of watched versions and true labels, and the statistics joining them."""

    async def add_predictions(self, model: str, version: str, rows: PredictionRows) -> int:
        """Store predictions; a request id seen before is ignored. How many were new."""

    async def add_feedback(self, model: str, rows: FeedbackRows) -> int:
        """Store labels; the first label of a request wins. How many were new."""

    async def stats(
        self, model: str, version: str, target: Target, after_n: int, upto_n: int | None = None
    ) -> TrafficStats:
        """Count, errors, p95 latency (linear interpolation) and live accuracy (under
        ``target``) of the version's predictions numbered ``after_n`` < n ≤ ``upto_n``."""

    async def prune(self, model: str) -> None:
        """Forget predictions no open watch of the model needs any more."""


class DecisionStore(Protocol):
    """Every decision, once, by key; and counts of bad input."""

    async def record(
        self,
        model: str,
        version: str,
        window_id: str,
        kind: str,
        *,
        emitted: bool,
        payload: dict[str, Any],
    ) -> bool:
        """Record a decision once; False when it was taken before (then emit nothing)."""

    async def latest_drift_share(self, model: str, version: str, since: datetime) -> float | None:
        """share_drifted of the version's latest drift window that ended at or after ``since``."""

    async def add_issue(self, model: str, version: str, reason: str, count: int) -> None:
        """Count bad input (unknown version, missing features, bad values)."""


@dataclass(frozen=True)
class Stores:
    """The monitor's stores, on one transaction."""

    versions: VersionStore
    aliases: AliasStore
    traffic: TrafficStore
    watches: WatchStore
    observations: ObservationStore
    decisions: DecisionStore


OpenStores = Callable[[Any], Stores]
"""A transaction's connection (``tx.conn``) → the stores working in that transaction."""
