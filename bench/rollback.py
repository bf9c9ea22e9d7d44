"""ModelDegraded observed → ModelRolledBack: how fast the registry takes a bad version out.

A real registry process (``python -m mlcp.registry``, its own topic prefix and schema) on the
real Kafka and PostgreSQL. The model is driven through events only, as the other services would:
RunFinished → (registered) → GatePassed → canary → CanaryHealthy → production. Each repetition
then measures both reactions, one at a time (concurrency 1):

* canary: a new version becomes the canary, ``ModelDegraded(alias=canary)`` → ``ModelRolledBack``
  (canary removed);
* production: a new version goes canary → production (the previous one becomes the rollback
  target), ``ModelDegraded(alias=production)`` → ``ModelRolledBack`` (production is back on the
  previous version, checked).

The clock runs in this process, from the start of the ModelDegraded send (acks=all) to the
receipt of the ModelRolledBack the registry published through its outbox: consume, decide,
commit, relay, Kafka, fetch. Repetitions: full 100, ``--quick`` 15, after 2 warm-ups; the
headline p95 is over both kinds (2 × repetitions samples). Target (issue 9): p95 ≤ 250 ms.

    uv run python bench/rollback.py [--quick] [--json PATH]

On the bus (bench/common.py: the dev stack by default) the registry runs as ``svc-registry``;
this process plays the trainer (RunFinished as ``svc-trainer``, source ``mlcp/trainer``), the
gatekeeper (GatePassed as ``svc-gatekeeper``) and the monitor (CanaryHealthy and ModelDegraded
as ``svc-monitor``, source ``mlcp/monitor``), and reads the registry's events as ``operator``.
"""

from __future__ import annotations

import copy
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import (
    Publisher,
    Service,
    Watcher,
    as_owner,
    bus,
    cleanup,
    cli,
    finish,
    latency,
    percentile,
    prepare_bus,
)

from mlcp.contracts import (
    CanaryHealthy,
    CloudEvent,
    GatePassed,
    ModelDegraded,
    ModelPromoted,
    ModelRolledBack,
    ModelVersionRegistered,
    RunFinished,
)
from mlcp.contracts.base import EventData
from tests.contracts.contract_examples import EXAMPLES

MODEL = "bench"
CONFIG = f"""
models:
  {MODEL}:
    dataset: d
    label: y
    train: m:f
    rollout: {{canary_percent: 10, rollback_window: 1h}}
"""
TARGET_P95_MS = 250.0
WINDOW = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:30:00Z", "size": 600}
CROSSED = [
    {"metric": "error_rate", "observed": 0.09, "operator": ">", "threshold": 0.05, "satisfied": 1}
]
TOPICS = (ModelVersionRegistered, ModelPromoted, ModelRolledBack)


class Driver:
    """Publishes the other services' events as they would (the trainer's RunFinished, the
    gatekeeper's GatePassed, the monitor's verdicts: each as its principal, with its source)
    and waits for the registry's answers."""

    def __init__(self, publisher: Publisher, watcher: Watcher) -> None:
        self.publisher, self.watcher = publisher, watcher
        self.runs = 0

    async def publish(self, data: EventData) -> tuple[float, CloudEvent[Any]]:
        event = as_owner(data)
        started = await self.publisher.send(event, key=MODEL.encode())
        return started, event

    async def register(self) -> str:
        self.runs += 1
        run_id = f"run-{self.runs}"
        data = copy.deepcopy(EXAMPLES[RunFinished.TYPE])
        data.update(run_id=run_id, model=MODEL, baseline=None)
        await self.publish(RunFinished.model_validate(data))
        _, event = await self.watcher.expect(
            ModelVersionRegistered.TYPE, lambda d: d.run_id == run_id
        )
        return str(event.data.version)

    async def promoted(self, version: str, alias: str) -> None:
        await self.watcher.expect(
            ModelPromoted.TYPE, lambda d: d.version == version and d.alias == alias
        )

    async def canary(self) -> str:
        version = await self.register()
        await self.publish(GatePassed(model=MODEL, version=version, stages=("quality",)))
        await self.promoted(version, "canary")
        return version

    async def production(self) -> str:
        version = await self.canary()
        healthy = {"model": MODEL, "version": version, "window": WINDOW}
        await self.publish(CanaryHealthy.model_validate(healthy))
        await self.promoted(version, "production")
        return version

    async def degrade(self, version: str, alias: str) -> tuple[float, float, Any]:
        """ms from the ModelDegraded send to the ModelRolledBack received, ms from its creation
        to the registry's decision (the ModelRolledBack's time), and the ModelRolledBack."""
        degraded = {
            "model": MODEL,
            "version": version,
            "alias": alias,
            "evidence": CROSSED,
            "window": WINDOW,
        }
        started, sent = await self.publish(ModelDegraded.model_validate(degraded))
        received, event = await self.watcher.expect(
            ModelRolledBack.TYPE, lambda d: d.from_version == version and d.alias == alias
        )
        decided = (event.time - sent.time).total_seconds() * 1000
        return (received - started) * 1000, decided, event


async def main(quick: bool, json_path: Path | None) -> None:
    n, warmup = (10, 2) if quick else (100, 2)
    token = uuid.uuid4().hex[:8]
    prefix, schema = f"bench{token}.", f"registry_rollback_{token}"
    work = Path(tempfile.mkdtemp(prefix="mlcp-bench-rollback-"))
    (work / "mlcp.yaml").write_text(CONFIG)
    registry = Service(
        "registry",
        {
            "MLCP_TOPIC_PREFIX": prefix,
            "MLCP_DB_SCHEMA": schema,
            "MLCP_CONFIG": str(work / "mlcp.yaml"),
            "MLCP_REGISTRY_BOOTSTRAP_TOKEN": "bench-" + "r" * 40,
        },
        work / "registry.log",
    )
    canary_ms: list[float] = []
    production_ms: list[float] = []
    decided_ms: list[float] = []  # ModelDegraded created → ModelRolledBack created (handler)
    try:
        await prepare_bus(prefix)
        registry.start()
        await registry.ready()
        topics = {t.TYPE: prefix + t.TYPE for t in TOPICS}
        async with (
            Publisher(prefix) as publisher,
            Watcher(bus("operator"), topics) as watcher,
        ):
            drive = Driver(publisher, watcher)
            previous = await drive.production()
            for i in range(warmup + n):
                version = await drive.canary()
                ms, decided, _ = await drive.degrade(version, "canary")
                if i >= warmup:
                    canary_ms.append(ms)
                    decided_ms.append(decided)
                version = await drive.production()
                ms, decided, event = await drive.degrade(version, "production")
                if event.data.to_version != previous:
                    raise SystemExit(
                        f"production rolled back to {event.data.to_version}, not {previous}"
                    )
                if i >= warmup:
                    production_ms.append(ms)
                    decided_ms.append(decided)
                print(f"repetition {i + 1}/{warmup + n}: production → {previous}", flush=True)
    finally:
        registry.stop()
        await cleanup(prefix, schema)

    both = canary_ms + production_ms
    print(f"registry: ModelDegraded sent → ModelRolledBack received, n={n} per kind, concurrency 1")
    print(f"{'ms':<12}{'p50':>8}{'p95':>8}{'max':>8}")
    for label, values in (
        ("canary", canary_ms),
        ("production", production_ms),
        ("both", both),
        ("  decided", decided_ms),  # in the handler's transaction: the rest is outbox + Kafka
    ):
        row = (statistics.median(values), percentile(values, 95), max(values))
        print(f"{label:<12}" + "".join(f"{v:>8.1f}" for v in row))
    finish(
        [
            latency(
                "rollback",
                "ModelDegraded observed → ModelRolledBack p95",
                both,
                f"registry process, {n} canary + {n} production rollbacks one at a time "
                f"(+{warmup} warm-ups each), ModelDegraded send → ModelRolledBack received",
                target_ms=TARGET_P95_MS,
                extra={
                    "canary_p95_ms": percentile(canary_ms, 95),
                    "production_p95_ms": percentile(production_ms, 95),
                    "decided_p50_ms": statistics.median(decided_ms),
                    "decided_p95_ms": percentile(decided_ms, 95),
                },
            )
        ],
        json_path,
    )


if __name__ == "__main__":
    cli(__doc__, main)
