"""The demo's scenario: the lifecycle steps, what each expects on the bus, and its deadline.

Each step acts (writes batches, sends traffic) and then waits for the events that prove the
platform reacted; it returns what it observed or raises ``StepFailed`` when its deadline passes.
Nothing here decides anything for the services: the demo only plays the data pipeline, the
inference service and the webhook receivers.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mlcp.cli.demo.inference import Inference
from mlcp.cli.demo.timeline import Seen, Timeline
from mlcp.cli.emit import publish
from mlcp.contracts import CANARY, PRODUCTION
from mlcp.policy.platform import ModelConfig
from mlcp.runtime.settings import Settings

BATCHES = 4
ROWS_PER_BATCH = 300
DRIFT_SHIFT = 1.5  # drifted traffic: every feature moved by 1.5 of its standard deviations


class StepFailed(Exception):
    """A step did not see what it expects before its deadline (message: what it did see)."""


@dataclass(frozen=True)
class Step:
    """One row of the summary."""

    name: str
    expected: str
    deadline_s: float
    run: Callable[[Scenario, float], Awaitable[str]]


@dataclass
class Scenario:
    """Everything the steps share."""

    settings: Settings
    model: str
    config: ModelConfig
    data_dir: Path
    timeline: Timeline
    inference: Inference
    monitor_url: str
    sink_url: str
    say: Callable[[str], None]
    run_id: str
    versions: dict[str, str] = field(default_factory=dict)  # "first" / "retrained" → SemVer
    waiting: Callable[[str], None] = lambda what: None
    """Told what the step waits for now (the runner shows it as a spinner on a terminal)."""
    seed: int = 0

    @property
    def seed_base(self) -> int:
        """A seed of this run: its data differs from other runs', reproducibly."""
        return zlib.crc32(self.run_id.encode()) % 1_000_000

    # -- waiting -----------------------------------------------------------------------------

    async def expect(self, what: str, deadline: float, predicate: Callable[[Seen], bool]) -> Seen:
        """The first event matching ``predicate``; StepFailed naming ``what`` at the deadline."""
        self.waiting(what)
        seen = await self.timeline.wait(predicate, deadline)
        if seen is None:
            raise StepFailed(f"no {what} in time")
        return seen

    def event(self, short: str, **fields: Any) -> Callable[[Seen], bool]:
        """A predicate: an event of type ``short`` whose data has these field values."""

        def match(seen: Seen) -> bool:
            return seen.short == short and all(
                getattr(seen.data, k, None) == v for k, v in fields.items()
            )

        return match

    async def poll(self, what: str, deadline: float, probe: Callable[[], Awaitable[Any]]) -> Any:
        """Call ``probe`` until it returns something truthy; StepFailed at the deadline."""
        self.waiting(what)
        while True:
            try:
                found = await probe()
            except httpx.HTTPError:
                found = None
            if found:
                return found
            if time.monotonic() >= deadline:
                raise StepFailed(f"{what}: not seen in time")
            await asyncio.sleep(0.25)

    async def monitor_alias(self, alias: str, version: str, deadline: float) -> None:
        """Wait until the monitor's projection shows ``alias`` on ``version`` (it then watches
        the alias' traffic; predictions sent before would not count for the watch)."""

        async def probe() -> bool:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.get(f"{self.monitor_url}/models/{self.model}")
            if response.status_code != 200:
                return False
            aliases = response.json().get("aliases", [])
            return any(a["alias"] == alias and a["version"] == version for a in aliases)

        await self.poll(f"the monitor following {alias}={version}", deadline, probe)

    async def feedback_ingested(self, count: int, deadline: float) -> None:
        """Wait until the monitor counted ``count`` labels of the model (its /metrics)."""
        pattern = re.compile(
            r'^mlcp_monitor_feedback_total\{model="' + re.escape(self.model) + r'"\} (\S+)$',
            re.MULTILINE,
        )

        async def probe() -> bool:
            async with httpx.AsyncClient(timeout=5) as client:
                text = (await client.get(f"{self.monitor_url}/metrics")).text
            found = pattern.search(text)
            return found is not None and float(found.group(1)) >= count

        await self.poll(f"{count} labels ingested by the monitor", deadline, probe)

    # -- traffic -----------------------------------------------------------------------------

    def rows(self, n: int, *, shift: float = 0.0) -> Any:
        """``n`` fresh rows of the demo's data (the label included), optionally shifted."""
        from mlcp.examples.sklearn import make_rows

        self.seed += 1
        return make_rows(n, seed=self.seed_base + self.seed, label=self.config.label, shift=shift)

    async def bake(
        self,
        version: str,
        verdicts: tuple[str, ...],
        deadline: float,
        *,
        shift: float = 0.0,
    ) -> tuple[Seen, int]:
        """Send labelled traffic until the monitor takes a verdict on the canary ``version``.

        Labels of most of the bake are known to the monitor before the request that completes
        the bake arrives (predictions and labels travel on different topics), so the verdict
        measures live accuracy, not only errors and latency.
        """
        await self.monitor_alias(CANARY, version, deadline)
        need = self.config.rollout.bake.min_predictions
        sent = labelled = 0
        verdict: Seen | None = None
        first = True
        while verdict is None:
            if time.monotonic() >= deadline:
                raise StepFailed(f"no verdict on canary {version} after {sent} predictions")
            # Requests reach the canary at its traffic percent; send enough for ~90 % of the
            # bake first, then wait for the labels, then small rounds until the verdict.
            canary_share = max(1, self.config.rollout.canary_percent) / 100
            target = int(need * 0.9) if first else 20
            n = max(1, int(target / canary_share)) if self._has_production() else target
            traffic = await self.inference.serve(self.rows(n, shift=shift), feedback_for=CANARY)
            sent += n
            labelled += sum(traffic.labelled.values())
            accuracy = traffic.accuracy(version)
            acc = "" if accuracy is None else f", live accuracy {accuracy:.2f}"
            self.say(
                f"served {n} requests ({traffic.predictions.get(version, 0)} by canary "
                f"{version}{acc})"
            )
            if first:
                await self.feedback_ingested(labelled, deadline)
                first = False
            verdict = await self.timeline.wait(
                lambda s: s.short in verdicts and getattr(s.data, "version", None) == version,
                min(deadline, time.monotonic() + 2.0),
            )
        return verdict, sent

    def _has_production(self) -> bool:
        return PRODUCTION in self.versions

    # -- data --------------------------------------------------------------------------------

    async def send_batches(self) -> int:
        """Write the batches (CSV and Parquet) and announce each one (DataArrived)."""
        from mlcp.examples.sklearn import write_batches

        dataset = self.config.dataset
        files = []
        for fmt, count in (("csv", BATCHES // 2), ("parquet", BATCHES - BATCHES // 2)):
            files += await asyncio.to_thread(
                write_batches,
                self.data_dir,
                batches=count,
                rows_per_batch=ROWS_PER_BATCH,
                seed=self.seed_base + (0 if fmt == "csv" else 7919),
                label=self.config.label,
                fmt=fmt,
                prefix=f"{fmt}-batch",
            )
        for batch in files:
            await publish(
                self.settings,
                batch.event(dataset),
                source="mlcp/demo-pipeline",
                correlationid=self.run_id,
            )
            self.say(f"pipeline: {batch.path.name} ({batch.rows} rows) → data.arrived")
        return sum(b.rows for b in files)


# --- the steps -------------------------------------------------------------------------------


async def data_to_training(s: Scenario, deadline: float) -> str:
    rows = await s.send_batches()
    request = await s.expect(
        "training.requested (data_threshold)",
        deadline,
        s.event("training.requested", model=s.model, reason="data_threshold"),
    )
    finished = await s.expect("run.finished", deadline, s.event("run.finished", model=s.model))
    accuracy = finished.data.metrics.get("accuracy", float("nan"))
    return (
        f"{BATCHES} batches / {rows} rows; requested at "
        f"{request.data.rows_since_last_run} ≥ {request.data.threshold} rows; "
        f"trained in {finished.data.duration_s:.1f}s, accuracy {accuracy:.3f}"
    )


async def gates_to_canary(s: Scenario, deadline: float) -> str:
    registered = await s.expect(
        "model.registered", deadline, s.event("model.registered", model=s.model)
    )
    version = s.versions["first"] = registered.data.version
    stages = [g.name for g in s.config.gates]
    for stage in stages:
        await s.expect(
            f"gate.check_passed {stage}",
            deadline,
            s.event("gate.check_passed", model=s.model, version=version, stage=stage),
        )
    await s.expect("gate.passed", deadline, s.event("gate.passed", model=s.model, version=version))
    promoted = await s.expect(
        "model.promoted canary",
        deadline,
        s.event("model.promoted", model=s.model, version=version, alias=CANARY),
    )
    return (
        f"{version} registered, {len(stages)} checks passed ({', '.join(stages)}), "
        f"canary at {promoted.data.traffic_percent:g}%"
    )


async def canary_to_production(s: Scenario, deadline: float) -> str:
    version = s.versions["first"]
    verdict, sent = await s.bake(version, ("canary.healthy", "model.degraded"), deadline)
    if verdict.short != "canary.healthy":
        raise StepFailed(f"canary {version} was judged degraded after {sent} predictions")
    await s.expect(
        "model.promoted production",
        deadline,
        s.event("model.promoted", model=s.model, version=version, alias=PRODUCTION),
    )
    s.versions[PRODUCTION] = version
    return f"{sent} predictions (labelled) → canary.healthy → production {version}"


async def drift_detected(s: Scenario, deadline: float) -> str:
    version = s.versions[PRODUCTION]
    await s.monitor_alias(PRODUCTION, version, deadline)
    window = s.config.drift.window_size
    n = window + 20
    traffic = await s.inference.serve(s.rows(n, shift=DRIFT_SHIFT), feedback_for=None)
    s.say(
        f"served {n} drifted requests (features +{DRIFT_SHIFT}σ) by production "
        f"{version} ({traffic.predictions.get(version, 0)})"
    )
    drift = await s.expect(
        "drift.detected", deadline, s.event("drift.detected", model=s.model, version=version)
    )
    drifted = sum(1 for f in {x.name for x in drift.data.features if x.drifted})
    return (
        f"window of {drift.data.window.size}: {drifted} features drifted, share "
        f"{drift.data.share_drifted:.2f} ≥ {drift.data.share_threshold}"
    )


async def drift_retraining(s: Scenario, deadline: float) -> str:
    await s.expect(
        "training.requested (drift)",
        deadline,
        s.event("training.requested", model=s.model, reason="drift"),
    )
    finished = await s.expect(
        "run.finished (drift)", deadline, s.event("run.finished", model=s.model, reason="drift")
    )
    registered = await s.expect(
        "model.registered (retrained)",
        deadline,
        s.event("model.registered", model=s.model, run_id=finished.data.run_id),
    )
    version = s.versions["retrained"] = registered.data.version
    await s.expect("gate.passed", deadline, s.event("gate.passed", model=s.model, version=version))
    await s.expect(
        "model.promoted canary",
        deadline,
        s.event("model.promoted", model=s.model, version=version, alias=CANARY),
    )
    baseline = registered.data.baseline
    versus = f" (production {baseline.version} on the same holdout)" if baseline else ""
    return (
        f"training.requested reason=drift → {version} ({registered.data.bump}) "
        f"accuracy {finished.data.metrics.get('accuracy', 0):.3f}{versus} → gates → canary"
    )


async def canary_degraded(s: Scenario, deadline: float) -> str:
    version = s.versions["retrained"]
    # The world moved (the drifted traffic goes on) but no new labelled data arrived: the
    # retrained candidate learned the same, old distribution, and its live accuracy collapses.
    verdict, sent = await s.bake(
        version, ("canary.healthy", "model.degraded"), deadline, shift=DRIFT_SHIFT
    )
    if verdict.short != "model.degraded":
        raise StepFailed(f"canary {version} was judged healthy after {sent} requests")
    crossed = [e for e in verdict.data.evidence if e.satisfied]
    why = ", ".join(f"{e.metric} {e.observed:.2f} {e.operator} {e.threshold:g}" for e in crossed)
    return f"{sent} requests → model.degraded ({why})"


async def rolled_back(s: Scenario, deadline: float) -> str:
    version = s.versions["retrained"]
    back = await s.expect(
        "model.rolled_back",
        deadline,
        s.event("model.rolled_back", model=s.model, alias=CANARY, from_version=version),
    )
    production = await s.inference.resolve(PRODUCTION)
    canary = await s.inference.resolve(CANARY)
    if production is None or production.version != s.versions[PRODUCTION]:
        raise StepFailed(f"production is {production and production.version}, not kept")
    if canary is not None:
        raise StepFailed(f"canary still serves {canary.version}")
    return (
        f"canary {version} removed (cause {back.data.cause}); registry: production "
        f"{production.version}, no canary"
    )


def alert_in(channel: str) -> Callable[[Scenario, float], Awaitable[str]]:
    """A step: the rollback alert was received on the sink's ``channel`` path."""

    async def step(s: Scenario, deadline: float) -> str:
        version = s.versions.get("retrained", "")

        async def probe() -> list[dict[str, Any]]:
            async with httpx.AsyncClient(timeout=5) as client:
                got = await client.get(f"{s.sink_url}/_sink/requests", params={"path": channel})
            mine = [r for r in got.json() if s.model in json.dumps(r.get("json") or r.get("text"))]
            hit = [
                r
                for r in mine
                if "rolled back" in json.dumps(r.get("json")).lower()
                and version in json.dumps(r.get("json"))
            ]
            return mine if hit else []

        received = await s.poll(f"the rollback alert on {channel}", deadline, probe)
        return f"{len(received)} alerts for the model on {channel}, the rollback among them"

    return step


STEPS = [
    Step(
        "1 data → training",
        f"{BATCHES} DataArrived → training.requested(data_threshold) → run.finished",
        180,
        data_to_training,
    ),
    Step(
        "1 gates → canary",
        "model.registered → every gate.check_passed → gate.passed → promoted canary",
        120,
        gates_to_canary,
    ),
    Step(
        "1 canary → production",
        "live traffic → canary.healthy → promoted production",
        90,
        canary_to_production,
    ),
    Step(
        "2 drifted traffic",
        "shifted features on production → drift.detected",
        60,
        drift_detected,
    ),
    Step(
        "2 retraining",
        "training.requested(drift) → run.finished → registered → gates → canary",
        180,
        drift_retraining,
    ),
    Step(
        "3 degraded canary",
        "bad live accuracy on the canary → model.degraded",
        90,
        canary_degraded,
    ),
    Step(
        "3 automatic rollback",
        "model.rolled_back; production unchanged, no canary",
        30,
        rolled_back,
    ),
    Step("4 alert → Slack", "rollback alert received at the Slack webhook", 30, alert_in("/slack")),
    Step("4 alert → WeCom", "rollback alert received at the WeCom robot", 30, alert_in("/wecom")),
]
