"""The whole lifecycle across the five services as processes, then the same under fault injection.

A PRIVATE dev stack (Kafka + PostgreSQL of mlcp.devstack in the test's tmp dir, on free ports)
is started for this module, because the fault test kills both servers. The five services run as
``python -m mlcp.<service>`` with a topic prefix and schemas unique to each test, an MLCP_CONFIG
written here, and a recording webhook sink (``mlcp.examples.webhook_sink``) standing in for
Slack and WeCom.

1. ``test_lifecycle_scenario``: data batches → threshold → real scikit-learn training → automatic
   gates → canary → CanaryHealthy (the test plays the inference service: it follows the aliases,
   predicts with the promoted artifacts and logs PredictionLogged) → production; drifted traffic
   → DriftDetected → TrainingRequested(reason=drift) → a new canary that fails its requests →
   ModelDegraded → ModelRolledBack; the alerts reach Slack and WeCom.
2. ``test_lifecycles_survive_kills_and_restarts``: MLCP_E2E_MODELS (8) lifecycles at once while
   every service is SIGKILLed at random moments (restarted at once), Kafka and PostgreSQL are
   each crashed and restarted once (seeded: MLCP_E2E_SEED replays a run; the seed is printed),
   then a reconciliation of every schema against the topics (``reconcile.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mlcp.artifacts import FileStore, load_artifact
from mlcp.contracts import PredictionLogged, decode_event, new_event
from mlcp.examples.sklearn import BatchFile, make_rows, write_batches
from tests.conftest import wait_for
from tests.e2e.reconcile import Expectations, Report, reconcile
from tests.e2e.stack import (
    SERVICES,
    Bus,
    PrivateStack,
    Registry,
    Services,
    SinkProc,
    log,
)

pytestmark = pytest.mark.e2e

LABEL = "churned"
TOKEN = "e2e-bootstrap-token-0123456789abcdef0123456789"
BATCHES, ROWS = 2, 100  # two batches cross the threshold of 200 rows
HTTP_TIMEOUT_S = 10.0  # the notifier's; a message in flight at a kill is settled after 2x + 5 s

MODEL = """
  {name}:
    dataset: {name}-events
    label: churned
    features: auto
    train: mlcp.examples.sklearn:train_logistic
    params: {{C: 1.0, max_iter: 200, seed: 7}}
    retrain: {{min_new_rows: 200, drift_cooldown: 1h}}
    drift: {{psi: 0.2, ks_pvalue: 0.001, share_of_features: 0.5, window_size: 100}}
    gates:
      - {{name: quality, kind: metrics, require: {{accuracy: ">= 0.8", latency_p95_ms: "<= 1000"}}}}
      - {{name: data, kind: data_quality, require: {{completeness: ">= 0.98"}}}}
      - {{name: baseline, kind: baseline, depends_on: [quality], metric: accuracy,
          min_absolute_change: 0.0}}
      - {{name: scan, kind: security_scan, depends_on: [baseline]}}
    rollout:
      canary_percent: 10
      bake: {{min_predictions: 50, max_duration: 1h}}
      degrade_if: {{error_rate: "> 0.05", latency_p95_ms: "> 250"}}
      rollback_window: 1h
"""

NOTIFICATIONS = """
notifications:
  channels:
    team-slack: {kind: slack, url_env: MLCP_SLACK_WEBHOOK_URL, rate_per_minute: 600}
    ops-wecom:  {kind: wecom, url_env: MLCP_WECOM_WEBHOOK_URL, language: zh, rate_per_minute: 600}
  routes:
    - {events: [gate.failed, model.rolled_back, drift.detected, run.failed],
       channels: [team-slack, ops-wecom]}
    - {events: [approval.requested, model.promoted], channels: [team-slack]}
"""


@pytest.fixture(scope="module")
def private_stack() -> Iterator[PrivateStack]:
    # Not under pytest's tmp dir: as root, PostgreSQL runs as another user that must traverse to
    # its data dir, and every new pytest session makes /tmp/pytest-of-<user> private again.
    root = Path(tempfile.mkdtemp(prefix="mlcp-e2e-stack-"))
    stack = PrivateStack(root)
    started = time.monotonic()
    try:
        stack.up()
        log(f"private stack up in {time.monotonic() - started:.1f}s: {stack.bootstrap}")
        yield stack
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Bed:
    """One test's services, bus, registry client and sink on the private stack."""

    stack: PrivateStack
    services: Services
    bus: Bus
    registry: Registry
    sink: SinkProc
    schemas: dict[str, str]
    data_dir: Path
    artifact_root: Path

    def schema(self, service: str) -> str:
        return self.schemas[service]


@contextlib.asynccontextmanager
async def bed_for(stack: PrivateStack, tmp_path: Path, models: list[str]) -> AsyncIterator[Bed]:
    unique = f"{random.getrandbits(40):010x}"
    prefix = f"e2e{unique}."
    schemas = {name: f"{name}_{unique}" for name in SERVICES}
    config = tmp_path / "mlcp.yaml"
    config.write_text("models:" + "".join(MODEL.format(name=m) for m in models) + NOTIFICATIONS)
    sink = SinkProc(tmp_path / "sink.log")
    await stack.prepare_bus(prefix)
    env = {
        "MLCP_DATABASE_URL": stack.database_url,
        "MLCP_TOPIC_PREFIX": prefix,
        "MLCP_CONFIG": str(config),
        "MLCP_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "MLCP_REGISTRY_BOOTSTRAP_TOKEN": TOKEN,
        "MLCP_SLACK_WEBHOOK_URL": f"{sink.url}/slack/T0/B0/e2e-secret",
        "MLCP_WECOM_WEBHOOK_URL": f"{sink.url}/wecom/send?key=e2e-secret",
        "MLCP_LOG_FORMAT": "text",
        # A dead consumer's partitions move after this; the default 10 s only slows the run.
        "MLCP_CONSUMER_SESSION_TIMEOUT_MS": "6000",
        "MLCP_TRAINER_WORKERS": "2",
        "MLCP_TRAINER_LEASE_S": "6",  # a run whose trainer was killed is re-claimed after
        "MLCP_TRAINER_MAX_ATTEMPTS": "6",  # more kills than one run can meet here
        "MLCP_NOTIFIER_HTTP_TIMEOUT_S": str(HTTP_TIMEOUT_S),
        "MLCP_NOTIFIER_RETRY_MAX_S": "5",
    }
    services = Services(env, schemas, tmp_path / "logs", stack.principal_env)
    bus = Bus(stack.settings("admin"), prefix)
    registry = Registry(services.url("registry"), TOKEN)
    try:
        await sink.wait_ready()
        started = time.monotonic()
        await services.start()
        log(f"five services ready in {time.monotonic() - started:.1f}s (prefix {prefix})")
        yield Bed(
            stack, services, bus, registry, sink, schemas, tmp_path / "data", tmp_path / "artifacts"
        )
    except BaseException:
        log(f"FAILED — service logs:\n{services.tails()}")
        raise
    finally:
        codes = await services.stop()
        log(f"services stopped: {codes}")
        await bus.close()
        await registry.close()
        sink.stop()


class Inference:
    """The test as an inference service: follows an alias, predicts, logs PredictionLogged."""

    def __init__(self, bed: Bed) -> None:
        self._bed = bed
        self._estimators: dict[tuple[str, str], Any] = {}
        self._served = Counter[str]()

    async def resolve(self, model: str, alias: str) -> tuple[str, Any] | None:
        body = await self._bed.registry.get(f"/models/{model}/aliases/{alias}")
        if not body or not body.get("version"):
            return None
        key = (model, str(body["version"]))
        if key not in self._estimators:
            art = body["artifact"]
            store = FileStore(self._bed.artifact_root)
            self._estimators[key] = await asyncio.to_thread(
                lambda: load_artifact(art["uri"], art["sha256"], art["format"], store=store)
            )
        return key[1], self._estimators[key]

    async def serve(
        self, model: str, alias: str, n: int, *, shift: float = 0.0, fail: float = 0.0
    ) -> str | None:
        """Answer ``n`` requests through ``alias``; ``fail``: share of requests that error."""
        found = await self.resolve(model, alias)
        if found is None:
            return None
        version, estimator = found
        seed = self._served[model]
        self._served[model] += n

        def predict() -> tuple[Any, Any]:
            rows = make_rows(
                n, seed=zlib.crc32(f"{model}/{seed}".encode()), label=LABEL, shift=shift
            )
            features = rows.drop(columns=[LABEL])
            return features, estimator.predict(features)

        features, predictions = await asyncio.to_thread(predict)
        rng = random.Random(seed)
        events = []
        for i, (record, prediction) in enumerate(
            zip(features.to_dict("records"), predictions, strict=True)
        ):
            error = rng.random() < fail
            data = PredictionLogged(
                model=model,
                version=version,
                alias=alias,
                request_id=f"{model}-{seed + i}",
                features={k: float(v) for k, v in record.items()},
                prediction=None if error else int(prediction),
                latency_ms=rng.uniform(2.0, 15.0),
                ts=datetime.now(UTC),
                error=error,
            )
            events.append(new_event(data, source="inference/e2e"))
        await self._bed.bus.send(events)
        return version


@dataclass
class Lifecycle:
    """One model's way through the scenario, with the time each step was seen."""

    model: str
    batches: list[BatchFile] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)
    v1: str = ""
    v2: str = ""

    @property
    def dataset(self) -> str:
        return f"{self.model}-events"


async def run_lifecycle(
    bed: Bed,
    lc: Lifecycle,
    *,
    step_timeout: float,
    reached: Callable[[str], None] = lambda step: None,
) -> None:
    """Drive one model from its first data batch to the rollback of its degraded canary."""
    inference = Inference(bed)
    registry = bed.registry
    start = time.monotonic()

    def seen(step: str) -> None:
        lc.steps[step] = round(time.monotonic() - start, 1)
        log(f"{lc.model}: {step} after {lc.steps[step]}s")
        reached(step)

    async def until(
        what: str, done: Callable[[], Awaitable[Any]], traffic: Callable[[], Awaitable[Any]]
    ) -> Any:
        # Traffic keeps flowing while we wait, as it would in front of a real inference service.
        async def step() -> Any:
            if result := await done():
                return result
            await traffic()
            return None

        result = await wait_for(
            step, timeout=step_timeout, what=f"{lc.model}: {what}", interval=0.5
        )
        seen(what)
        return result

    async def nothing() -> None:
        return None

    async def canary_is(expected: Callable[[str], bool]) -> str | None:
        version = await registry.alias(lc.model, "canary")
        return version if version is not None and expected(version) else None

    async def aliases_are(production: str, canary: str) -> bool:
        return (
            await registry.alias(lc.model, "production"),
            await registry.alias(lc.model, "canary"),
        ) == (production, canary)

    lc.batches = await asyncio.to_thread(
        write_batches,
        bed.data_dir / lc.model,
        batches=BATCHES,
        rows_per_batch=ROWS,
        label=LABEL,
        seed=sum(map(ord, lc.model)),
        prefix=f"{lc.model}-batch",
    )
    await bed.bus.send(new_event(b.event(lc.dataset), source="pipeline/e2e") for b in lc.batches)
    seen("data sent")
    lc.v1 = await until("canary v1", lambda: canary_is(bool), nothing)

    async def healthy_canary() -> None:
        await inference.serve(lc.model, "canary", 10)

    await until("v1 in production", lambda: aliases_are(lc.v1, ""), healthy_canary)

    async def drifted_production() -> None:
        await inference.serve(lc.model, "production", 10, shift=3.0)

    lc.v2 = await until(
        "drift retrain is canary", lambda: canary_is(lambda v: v not in ("", lc.v1)),
        drifted_production,
    )  # fmt: skip

    async def degraded_canary() -> None:
        await inference.serve(lc.model, "canary", 10, fail=0.5)
        await inference.serve(lc.model, "production", 10)

    await until("degraded canary rolled back", lambda: aliases_are(lc.v1, ""), degraded_canary)


async def rows(bed: Bed, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(bed.stack.database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def settled(bed: Bed) -> str:
    """'' when nothing is in flight any more, else what still moves (for the poll's message)."""
    waiting = []
    for service in SERVICES:
        schema = bed.schema(service)
        [row] = await rows(
            bed, f"SELECT count(*) AS n FROM {schema}.mlcp_outbox WHERE published_at IS NULL"
        )
        if row["n"]:
            waiting.append(f"{service} outbox {row['n']}")
        lag = await bed.bus.lag(f"{bed.bus.prefix}mlcp-{service}")
        if lag:
            waiting.append(f"{service} lag {lag}")
    open_rows = await rows(
        bed,
        f"SELECT count(*) AS n FROM {bed.schema('notifier')}.deliveries "
        "WHERE state IN ('pending', 'sending')",
    )
    if open_rows[0]["n"]:
        waiting.append(f"notifier deliveries open {open_rows[0]['n']}")
    return ", ".join(waiting)


async def reconciled(
    bed: Bed, expect: Callable[[], Awaitable[Expectations]], timeout: float
) -> Report:
    """Quiesce, then reconcile until the report is clean (events may still be in flight)."""

    async def quiet() -> bool:
        return await settled(bed) == ""

    try:
        await wait_for(quiet, timeout=timeout, what="the system to settle", interval=1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {await settled(bed)}") from None
    last: list[Report] = []

    async def clean() -> bool:
        report = await reconcile(bed.stack.database_url, bed.schemas, bed.bus, await expect())
        last[:] = [report]
        return not report.problems

    try:
        await wait_for(clean, timeout=timeout, what="a clean reconciliation", interval=2.0)
    finally:
        if last:
            log(last[0].render())
    return last[0]


async def events_of(bed: Bed, event_type: str) -> list[Any]:
    """Distinct events on a topic (by CloudEvents id), in offset order per partition."""
    seen: dict[str, Any] = {}
    for record in await bed.bus.read(bed.bus.topic(event_type)):
        event = decode_event(record.value, expected_type=event_type)
        seen.setdefault(event.id, event)
    return list(seen.values())


async def expectations(bed: Bed, lifecycles: list[Lifecycle], **extra: Any) -> Expectations:
    requests = await bed.sink.requests()
    assert requests is not None, "the sink does not answer"
    return Expectations(
        batches=[(lc.dataset, b.batch_id) for lc in lifecycles for b in lc.batches],
        provoked_dlq=extra.get("provoked_dlq", {}),
        notifier_kills=bed.services["notifier"].kills,
        sink_requests=requests,
    )


async def assert_lifecycles_complete(bed: Bed, lifecycles: list[Lifecycle]) -> None:
    """Each model went through the scenario exactly once: the events on the bus say so."""
    requested = Counter(
        (e.data.model, e.data.reason) for e in await events_of(bed, "mlcp.training.requested.v1")
    )
    finished = Counter(e.data.model for e in await events_of(bed, "mlcp.run.finished.v1"))
    healthy = {
        (e.data.model, e.data.version) for e in await events_of(bed, "mlcp.canary.healthy.v1")
    }
    degraded = [
        (e.data.model, e.data.version, e.data.alias)
        for e in await events_of(bed, "mlcp.model.degraded.v1")
    ]
    rolled_back = [
        (e.data.model, e.data.alias, e.data.from_version, e.data.to_version, e.data.cause)
        for e in await events_of(bed, "mlcp.model.rolled_back.v1")
    ]
    drifted = Counter(e.data.model for e in await events_of(bed, "mlcp.drift.detected.v1"))
    assert lifecycles, "no lifecycle to check"
    for lc in lifecycles:
        m = lc.model
        assert (requested[(m, "data_threshold")], requested[(m, "drift")]) == (1, 1), requested
        assert finished[m] == 2, finished
        assert (m, lc.v1) in healthy
        assert [d for d in degraded if d[0] == m] == [(m, lc.v2, "canary")]
        assert [r for r in rolled_back if r[0] == m] == [(m, "canary", lc.v2, None, "degraded")]
        assert drifted[m] >= 1
        assert (await bed.registry.get(f"/models/{m}/versions/{lc.v2}"))["status"] == "rejected"
        assert (await bed.registry.get(f"/models/{m}/versions/{lc.v1}"))["status"] == "production"


@pytest.mark.timeout(900)
async def test_lifecycle_scenario(private_stack: PrivateStack, tmp_path: Path) -> None:
    lc = Lifecycle("churn")
    async with bed_for(private_stack, tmp_path, [lc.model]) as bed:
        await run_lifecycle(bed, lc, step_timeout=STEP_TIMEOUT_S)
        # Same data, code and params: a patch. The trainer's code_version is the git commit of the
        # entrypoint's file, so a commit landing between the two runs (a shared checkout) makes
        # it a minor bump instead.
        assert lc.v1 == "1.0.0"
        assert lc.v2 in ("1.0.1", "1.1.0")
        await reconciled(bed, lambda: expectations(bed, [lc]), timeout=90)
        await assert_lifecycles_complete(bed, [lc])

        [threshold] = [
            e.data
            for e in await events_of(bed, "mlcp.training.requested.v1")
            if e.data.reason == "data_threshold"
        ]
        assert threshold.rows_since_last_run == BATCHES * ROWS
        assert threshold.threshold == 200
        assert len(threshold.trigger_event_ids) == BATCHES
        finished = {e.data.reason: e.data for e in await events_of(bed, "mlcp.run.finished.v1")}
        assert finished["drift"].baseline is not None, "the drift run scored production 1.0.0"
        assert finished["drift"].baseline.version == "1.0.0"
        gates = await events_of(bed, "mlcp.gate.passed.v1")
        passed = {e.data.version: set(e.data.stages) for e in gates}
        stages = {"quality", "data", "baseline", "scan"}
        assert passed == {"1.0.0": stages, lc.v2: stages}
        promoted = [
            (e.data.version, e.data.alias, e.data.cause)
            for e in await events_of(bed, "mlcp.model.promoted.v1")
        ]
        assert promoted == [
            ("1.0.0", "canary", "gate_passed"),
            ("1.0.0", "production", "canary_healthy"),
            (lc.v2, "canary", "gate_passed"),
        ]
        drift = (await events_of(bed, "mlcp.drift.detected.v1"))[0].data
        assert (drift.version, drift.alias) == ("1.0.0", "production")
        assert drift.share_drifted >= 0.5

        # An alert reaches each channel: Slack and WeCom both hear of the drift and the rollback.
        received = await bed.sink.requests() or []
        slack = [r for r in received if r["path"].startswith("/slack/")]
        wecom = [r for r in received if r["path"].startswith("/wecom/")]
        assert all(r["query"] == "key=e2e-secret" for r in wecom)
        slack_text = " ".join(str(r["json"]) for r in slack)
        wecom_text = " ".join(str(r["json"]) for r in wecom)
        assert f"churn canary {lc.v2}" in slack_text, "the rollback reached Slack"
        assert f"模型已回滚：churn canary {lc.v2}" in wecom_text, "the rollback reached WeCom"
        assert "churn 1.0.0" in slack_text, "the drift alert reached Slack"
        assert "检测到数据漂移：churn 1.0.0" in wecom_text, "the drift alert reached WeCom"
        log(f"scenario steps (s since the first batch): {lc.steps}")


MODELS = int(os.environ.get("MLCP_E2E_MODELS", "6"))
KILLS_PER_SERVICE = int(os.environ.get("MLCP_E2E_KILLS", "2"))
# Deadlines, not waits: a passing run never sleeps them out. A slow, shared machine needs more.
TIMEOUT_S = int(os.environ.get("MLCP_E2E_TIMEOUT_S", "1800"))
STEP_TIMEOUT_S = float(os.environ.get("MLCP_E2E_STEP_TIMEOUT_S", "600"))


@dataclass
class Fault:
    at: float  # seconds after the run started
    what: str
    took: float = 0.0


# The faults are spread over three phases of the run, each started when the first lifecycle gets
# there, so that they hit training, the canary bake and the rollback whatever the machine's speed.
PHASES = ("data sent", "v1 in production", "drift retrain is canary")


def plan(rng: random.Random) -> list[list[tuple[float, str]]]:
    """Every service killed KILLS_PER_SERVICE times, Kafka and PostgreSQL once, shuffled, with
    a random pause before each; dealt round-robin to the phases."""
    faults = [f"kill {s}" for s in SERVICES for _ in range(KILLS_PER_SERVICE)]
    faults += ["restart kafka", "restart postgres"]
    rng.shuffle(faults)
    timed = [(rng.uniform(1.0, 5.0), fault) for fault in faults]
    return [timed[i :: len(PHASES)] for i in range(len(PHASES))]


async def inject(
    bed: Bed,
    chunks: list[list[tuple[float, str]]],
    phases: dict[str, asyncio.Event],
    done: list[Fault],
) -> None:
    start = time.monotonic()
    for phase, chunk in zip(PHASES, chunks, strict=True):
        await phases[phase].wait()
        for delay, what in chunk:
            await asyncio.sleep(delay)  # the random moment itself, not a wait for a condition
            at = time.monotonic() - start
            log(f"FAULT {what} at {at:.1f}s (phase: {phase})")
            took = 0.0
            if what == "restart kafka":
                took = await bed.stack.restart_kafka()
            elif what == "restart postgres":
                took = await bed.stack.restart_postgres()
            else:
                bed.services[what.removeprefix("kill ")].kill()
            done.append(Fault(round(at, 1), what, round(took, 1)))


@pytest.mark.timeout(TIMEOUT_S)
async def test_lifecycles_survive_kills_and_restarts(
    private_stack: PrivateStack, tmp_path: Path
) -> None:
    seed = int(os.environ.get("MLCP_E2E_SEED") or random.randrange(2**32))
    log(f"fault injection seed {seed} (replay with MLCP_E2E_SEED={seed})")
    print(f"MLCP_E2E_SEED={seed}")
    rng = random.Random(seed)
    lifecycles = [Lifecycle(f"m{i}") for i in range(MODELS)]
    faults: list[Fault] = []
    phases = {phase: asyncio.Event() for phase in PHASES}

    def reached(step: str) -> None:
        if step in phases:
            phases[step].set()

    async with bed_for(private_stack, tmp_path, [lc.model for lc in lifecycles]) as bed:
        # A poison record, on purpose: the only dead letter the reconciliation may find.
        await bed.bus.send_raw("mlcp.data.arrived.v1", b"m0-events", b"{not json")
        started = time.monotonic()
        injector = asyncio.create_task(inject(bed, plan(rng), phases, faults))
        drivers = [
            run_lifecycle(bed, lc, step_timeout=STEP_TIMEOUT_S, reached=reached)
            for lc in lifecycles
        ]
        results = await asyncio.gather(*drivers, return_exceptions=True)
        wall = time.monotonic() - started
        late = len(faults)
        for event in phases.values():  # a phase no lifecycle reached must not hold the rest
            event.set()
        await injector
        late = len(faults) - late
        log("faults: " + ", ".join(f"{f.what}@{f.at}s({f.took}s)" for f in faults))
        if late:
            log(f"{late} faults came after the last lifecycle finished")
        if errors := [r for r in results if isinstance(r, BaseException)]:
            raise AssertionError(f"{len(errors)} lifecycles did not complete: {errors}")

        report = await reconciled(
            bed,
            lambda: expectations(bed, lifecycles, provoked_dlq={"mlcp.data.arrived.v1.dlq": 1}),
            timeout=180,
        )
        await assert_lifecycles_complete(bed, lifecycles)
        kills = Counter(f.what for f in faults)
        assert all(kills[f"kill {s}"] == KILLS_PER_SERVICE for s in SERVICES), kills
        log(f"{MODELS} lifecycles in {wall:.0f}s under {len(faults)} faults (seed {seed})")
        for lc in lifecycles:
            log(f"  {lc.model}: {lc.v1} → production, {lc.v2} rolled back; steps {lc.steps}")
        if crashes := bed.services.crashes():
            log(f"services that exited by themselves (restarted): {crashes}")
        assert not report.problems
