"""The demo's live timeline: every event of the run's model read from the bus, with its timing.

The reader assigns itself every partition of every mlcp topic (no consumer group: it must not
take partitions from anyone) from their ends at start, decodes records with the contracts (as
``mlcp events tail`` does) and keeps those about the run's model or dataset.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from mlcp.contracts import ALL_TOPICS, ContractError, decode_event
from mlcp.runtime.kafka import make_consumer
from mlcp.runtime.settings import Settings


@dataclass(frozen=True)
class Seen:
    """One event of the run as the timeline saw it."""

    at: float  # seconds since the demo started
    type: str  # e.g. mlcp.model.promoted.v1
    data: Any  # the decoded contract model

    @property
    def short(self) -> str:
        """``model.promoted`` for ``mlcp.model.promoted.v1``."""
        return self.type.removeprefix("mlcp.").rsplit(".", 1)[0]


def _pct(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _metrics(metrics: dict[str, Any]) -> str:
    keys = ("accuracy", "latency_p95_ms", "train_rows")
    return " ".join(f"{k}={_pct(metrics[k])}" for k in keys if k in metrics)


def _crossed(evidence: Any) -> str:
    # Degraded: the crossed limits only; healthy: every measurement beside its limit.
    items = [e for e in evidence if e.satisfied] or list(evidence)
    return ", ".join(
        f"{e.metric}={_pct(e.observed)} (limit {e.operator or ''} {_pct(e.threshold)})"
        for e in items[:3]
    )


def describe(seen: Seen) -> tuple[str, str]:
    """``(model@version, key evidence)`` of an event, for one timeline line."""
    d = seen.data
    subject = str(getattr(d, "model", None) or getattr(d, "dataset", ""))
    version = getattr(d, "version", None)
    who = f"{subject}@{version}" if version else subject
    match seen.short:
        case "data.arrived":
            facts = f"batch={d.batch_id} rows={d.rows} {d.format or ''} sha256={d.sha256[:12]}…"
            return who, facts
        case "training.requested":
            rows = "" if d.rows_since_last_run is None else f" rows={d.rows_since_last_run}"
            return who, f"reason={d.reason}{rows}"
        case "run.started":
            return who, f"run={d.run_id[:20]} reason={d.reason}"
        case "run.finished":
            return who, f"{_metrics(d.metrics)} took {d.duration_s:.1f}s"
        case "run.failed":
            return who, f"stage={d.stage} {d.error_type}: {d.error[:80]}"
        case "model.registered":
            return who, f"bump={d.bump or 'first'} accuracy={_pct(d.metrics.get('accuracy'))}"
        case "gate.check_passed" | "gate.failed":
            return who, f"stage={d.stage} ({d.kind})"
        case "gate.passed":
            return who, "stages=" + ",".join(d.stages)
        case "model.promoted":
            return f"{d.model}@{d.version}", f"→ {d.alias} {d.traffic_percent:g}% cause={d.cause}"
        case "model.rolled_back":
            to = d.to_version or "(removed)"
            return f"{d.model}@{d.from_version}", f"{d.alias} → {to} cause={d.cause}"
        case "drift.detected":
            drifted = len({f.name for f in d.features if f.drifted})
            return who, f"share_drifted={d.share_drifted:.2f} ({drifted} features) on {d.alias}"
        case "model.degraded":
            return who, f"{d.alias}: {_crossed(d.evidence)}"
        case "canary.healthy":
            return who, f"{d.window.size} predictions: {_crossed(d.evidence)}"
    return who, ""


# The traffic the demo itself sends: counted, not printed one line per record.
QUIET = ("mlcp.prediction.logged.v1", "mlcp.feedback.received.v1")


class Timeline:
    """Reads the bus in the background; ``wait`` for an event, ``events`` for what was seen."""

    def __init__(
        self,
        settings: Settings,
        subjects: set[str],
        started: float,
        on_event: Callable[[Seen], None],
    ) -> None:
        self._settings = settings
        self._subjects = subjects
        self._started = started
        self._on_event = on_event
        self.events: list[Seen] = []
        self.counts: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Assign every partition at its end, start reading (``mlcp bus apply`` made the
        topics)."""
        topics = [self._settings.topic(t) for t in ALL_TOPICS]
        consumer = make_consumer(
            self._settings,
            group_id=None,
            enable_auto_commit=False,
        )
        await consumer.start()
        self._consumer = consumer
        cluster = await consumer._client.fetch_all_metadata()
        partitions = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(cluster.partitions_for_topic(t) or ())
        ]
        consumer.assign(partitions)
        # Start at the ends as they are now (one request for all partitions): nothing emitted
        # from here on is skipped, nothing older is replayed.
        for tp, offset in (await consumer.end_offsets(partitions)).items():
            consumer.seek(tp, offset)
        self._task = asyncio.create_task(self._run(consumer))

    async def stop(self) -> None:
        """Stop reading."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        prefix = self._settings.topic_prefix
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            records = [r for rs in batch.values() for r in rs]
            decoded = []
            for record in records:
                event_type = record.topic.removeprefix(prefix)
                try:
                    event = decode_event(record.value or b"", expected_type=event_type)
                except ContractError:
                    continue
                if event.subject in self._subjects:
                    decoded.append((event_type, event))
            # In the order the services emitted them (one fetch spans several topics).
            decoded.sort(key=lambda pair: pair[1].time)
            fresh = []
            for event_type, event in decoded:
                self.counts[event_type] = self.counts.get(event_type, 0) + 1
                if event_type in QUIET:
                    continue
                seen = Seen(time.monotonic() - self._started, event_type, event.data)
                self.events.append(seen)
                fresh.append(seen)
                self._on_event(seen)
            if fresh or records:
                async with self._changed:
                    self._changed.notify_all()

    async def wait(self, predicate: Callable[[Seen], bool], deadline: float) -> Seen | None:
        """The first event (seen before or from now) matching ``predicate``, or None at the
        ``deadline`` (a ``time.monotonic()`` value)."""
        checked = 0
        while True:
            for seen in self.events[checked:]:
                if predicate(seen):
                    return seen
            checked = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
