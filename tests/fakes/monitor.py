"""The monitor's stores in memory (``mlcp.monitor.ports``), for unit tests of its handlers.

One ``FakeMonitorStore`` holds every table as plain Python values; ``open`` is the handlers'
``OpenStores`` (it ignores the connection: there is one store per test). The semantics follow
the SQL of ``mlcp.monitor.stores``: first registration and first label win, a request id is
stored once per model, decisions are recorded once per key, predictions no open watch needs are
pruned, statistics are computed the same way (p95 by linear interpolation, as percentile_cont).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from mlcp.monitor.domain import (
    NewWatch,
    OpenWindow,
    Traffic,
    TrafficStats,
    Watch,
    traffic_stats_of,
)
from mlcp.monitor.drift import Chunk
from mlcp.monitor.ports import FeedbackRows, PredictionRows, Stores, VersionInfo
from mlcp.policy.target import Target


@dataclass
class StoredPrediction:
    """A row of the ``predictions`` table."""

    version: str
    n: int
    ts: datetime
    latency_ms: float
    error: bool
    prediction: str | None


@dataclass
class Ended:
    """How and when a watch ended."""

    outcome: str
    at: datetime


@dataclass
class FakeMonitorStore:
    """Every monitor table in memory; its six stores are views of it."""

    versions: dict[tuple[str, str], VersionInfo] = field(default_factory=dict)
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)
    traffic: dict[tuple[str, str], Traffic] = field(default_factory=dict)
    chunks: dict[tuple[str, str, int], list[Chunk]] = field(default_factory=dict)
    watches: dict[int, Watch] = field(default_factory=dict)
    ended: dict[int, Ended] = field(default_factory=dict)
    predictions: dict[tuple[str, str], StoredPrediction] = field(default_factory=dict)
    feedback: dict[tuple[str, str], str] = field(default_factory=dict)
    decisions: dict[tuple[str, str, str, str], tuple[bool, dict[str, Any]]] = field(
        default_factory=dict
    )
    issues: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def open(self, conn: Any = None) -> Stores:
        """The handlers' ``OpenStores``: the same in-memory stores for any connection."""
        return Stores(
            versions=_Versions(self),
            aliases=_Aliases(self),
            traffic=_Traffic(self),
            watches=_Watches(self),
            observations=_Observations(self),
            decisions=_Decisions(self),
        )

    def open_watches(self, model: str) -> list[Watch]:
        """The model's watches that have not ended, oldest first."""
        return [
            w for i, w in sorted(self.watches.items()) if w.model == model and i not in self.ended
        ]


class _View:
    def __init__(self, db: FakeMonitorStore) -> None:
        self.db = db


class _Versions(_View):
    async def add(
        self, model: str, version: str, info: VersionInfo, registered_at: datetime
    ) -> bool:
        if (model, version) in self.db.versions:
            return False
        self.db.versions[model, version] = info
        return True

    async def get(self, model: str, version: str) -> VersionInfo | None:
        return self.db.versions.get((model, version))


class _Aliases(_View):
    async def set(self, model: str, alias: str, version: str, since: datetime) -> None:
        self.db.aliases[model, alias] = version

    async def drop(self, model: str, alias: str, version: str) -> None:
        if self.db.aliases.get((model, alias)) == version:
            del self.db.aliases[model, alias]

    async def version(self, model: str, alias: str) -> str | None:
        return self.db.aliases.get((model, alias))

    async def of(self, model: str, version: str) -> list[str]:
        found = [a for (m, a), v in self.db.aliases.items() if m == model and v == version]
        return sorted(found, key=lambda a: (a != "production", a))


class _Traffic(_View):
    async def lock(self, model: str, version: str) -> Traffic:
        return self.db.traffic.setdefault((model, version), Traffic(0, OpenWindow(seq=1)))

    async def served(self, model: str, version: str) -> int:
        found = self.db.traffic.get((model, version))
        return found.served if found else 0

    async def save(self, model: str, version: str, traffic: Traffic) -> None:
        self.db.traffic[model, version] = traffic

    async def add_chunk(self, model: str, version: str, seq: int, chunk: Chunk) -> None:
        self.db.chunks.setdefault((model, version, seq), []).append(chunk)

    async def take_chunks(self, model: str, version: str, seq: int) -> list[Chunk]:
        return self.db.chunks.pop((model, version, seq), [])


class _Watches(_View):
    async def open(self, model: str) -> list[Watch]:
        return self.db.open_watches(model)

    async def start(self, watch: NewWatch) -> int:
        watch_id = len(self.db.watches) + 1
        self.db.watches[watch_id] = Watch(**watch.__dict__, id=watch_id)
        return watch_id

    async def end_alias(
        self, model: str, alias: str, outcome: str, at: datetime, version: str | None = None
    ) -> None:
        for watch in self.db.open_watches(model):
            if watch.alias == alias and version in (None, watch.version):
                self.db.ended[watch.id] = Ended(outcome, at)

    async def end(self, watch_id: int, outcome: str, at: datetime) -> None:
        self.db.ended[watch_id] = Ended(outcome, at)

    async def advance(self, watch_id: int, next_window: int) -> None:
        self.db.watches[watch_id] = replace(self.db.watches[watch_id], next_window=next_window)


class _Observations(_View):
    async def add_predictions(self, model: str, version: str, rows: PredictionRows) -> int:
        new = 0
        for i, request_id in enumerate(rows.request_ids):
            if (model, request_id) not in self.db.predictions:
                self.db.predictions[model, request_id] = StoredPrediction(
                    version,
                    rows.first_n + i,
                    rows.ts[i],
                    float(rows.latency_ms[i]),
                    bool(rows.error[i]),
                    rows.prediction[i],
                )
                new += 1
        return new

    async def add_feedback(self, model: str, rows: FeedbackRows) -> int:
        new = 0
        for request_id, label in zip(rows.request_ids, rows.labels, strict=True):
            if (model, request_id) not in self.db.feedback:
                self.db.feedback[model, request_id] = label
                new += 1
        return new

    async def stats(
        self, model: str, version: str, target: Target, after_n: int, upto_n: int | None = None
    ) -> TrafficStats:
        rows = [
            (request_id, p)
            for (m, request_id), p in self.db.predictions.items()
            if m == model and p.version == version and p.n > after_n
            if upto_n is None or p.n <= upto_n
        ]
        labelled = [
            (p.prediction, self.db.feedback[model, request_id])
            for request_id, p in rows
            if not p.error and p.prediction is not None and (model, request_id) in self.db.feedback
        ]
        latency = [p.latency_ms for _, p in rows]
        return traffic_stats_of(
            target,
            count=len(rows),
            errors=sum(p.error for _, p in rows),
            latency_p95_ms=float(np.percentile(latency, 95)) if latency else None,
            predictions=[str(p) for p, _ in labelled],
            labels=[label for _, label in labelled],
        )

    async def prune(self, model: str) -> None:
        needed = {
            v for w in self.db.open_watches(model) for v in (w.version, w.baseline_version) if v
        }
        for key, p in list(self.db.predictions.items()):
            if key[0] == model and p.version not in needed:
                del self.db.predictions[key]


class _Decisions(_View):
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
        key = (model, version, window_id, kind)
        if key in self.db.decisions:
            return False
        self.db.decisions[key] = (emitted, payload)
        return True

    async def latest_drift_share(self, model: str, version: str, since: datetime) -> float | None:
        ends = [
            (datetime.fromisoformat(payload["window"]["end"]), payload["share_drifted"])
            for (m, v, _, kind), (_, payload) in self.db.decisions.items()
            if m == model and v == version and kind == "drift"
        ]
        after = [e for e in ends if e[0] >= since]
        return float(max(after)[1]) if after else None

    async def add_issue(self, model: str, version: str, reason: str, count: int) -> None:
        key = (model, version, reason)
        self.db.issues[key] = self.db.issues.get(key, 0) + count
