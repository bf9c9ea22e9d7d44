"""The gatekeeper through real Kafka and PostgreSQL: a passing DAG, each failing kind (with a
real malicious pickle that is never loaded), people and CI decisions, duplicated and
out-of-order events, supersession, an external check that times out, restart-safe deadlines.

One gatekeeper runs for the module (its own topic prefix and schema); each test uses its own
model of the config so that the tests do not see each other's candidates.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from mlcp.contracts import (
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    CheckPassed,
    CloudEvent,
    EventData,
    ExternalCheckReported,
    GateFailed,
    GatePassed,
    decode_event,
    encode_event,
    new_event,
)
from mlcp.gatekeeper.app import GatekeeperSettings, build
from mlcp.runtime import ServiceRuntime, Settings
from tests.conftest import Infra, wait_for
from tests.integration.kafka_tools import create_topics, produce, read_all
from tests.unit.test_gatekeeper_domain import registered

pytestmark = pytest.mark.integration

AUTO = (
    '[{name: quality, kind: metrics, require: {accuracy: ">= 0.92", latency_p95_ms: "<= 200"}},'
    ' {name: data, kind: data_quality, require: {completeness: ">= 0.98", rows: ">= 1000"}},'
    " {name: baseline, kind: baseline, depends_on: [quality], metric: accuracy,"
    " min_absolute_change: 0.0},"
    " {name: scan, kind: security_scan, depends_on: [baseline, data]}]"
)
HUMAN = (
    '[{name: quality, kind: metrics, require: {accuracy: ">= 0.92"}},'
    " {name: review, kind: external, check: code-review, timeout: %s},"
    " {name: approve, kind: manual, depends_on: [quality, review], expires: 1h}]"
)
MODELS = {
    "auto": AUTO,
    "f-metrics": AUTO,
    "f-data": AUTO,
    "f-baseline": AUTO,
    "f-scan": AUTO,
    "f-hash": AUTO,
    "human": HUMAN % "1h",
    "rejected": HUMAN % "1h",
    "ooo": HUMAN % "1h",
    "sup": HUMAN % "1h",
    "slow": HUMAN % "2s",
    "api": HUMAN % "1h",
}
OUTPUTS = [CheckPassed, GateFailed, GatePassed, ApprovalRequested]


def config_text() -> str:
    lines = ["models:"]
    for name, gates in MODELS.items():
        lines.append(f'  {name}: {{dataset: d, label: y, train: "m:f", gates: {gates}}}')
    return "\n".join(lines) + "\n"


@dataclass
class Gatekeeper:
    infra: Infra
    settings: Settings
    runtime: ServiceRuntime
    root: Path

    async def send(self, data: EventData, **envelope: Any) -> CloudEvent[Any]:
        event = new_event(data, source="mlcp/registry", **envelope)
        await self.send_event(event)
        return event

    async def send_event(self, event: CloudEvent[Any]) -> None:
        topic = self.settings.topic(event.type)
        key = event.subject.encode() if event.subject else None
        await produce(self.infra.admin, topic, [(key, encode_event(event), [])])

    async def emitted(self, kind: type[EventData], model: str) -> list[Any]:
        """Data of every ``kind`` event the gatekeeper published about ``model``."""
        records = await read_all(self.infra.admin, self.settings.topic(kind.TYPE))
        events = [decode_event(r.value, expected_type=kind.TYPE) for r in records]
        return [e.data for e in events if e.data.model == model]

    async def wait_emitted(
        self, kind: type[EventData], model: str, count: int = 1, timeout: float = 30
    ) -> list[Any]:
        async def enough() -> list[Any] | None:
            found = await self.emitted(kind, model)
            return found if len(found) >= count else None

        found: list[Any] = await wait_for(
            enough, timeout=timeout, interval=0.2, what=f"{count} {kind.__name__} for {model}"
        )
        return found

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        conn = await asyncpg.connect(self.infra.database_url)
        try:
            await conn.execute(f"SET search_path TO {self.runtime.schema}")
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def stage_status(self, model: str, version: str, stage: str) -> str | None:
        rows = await self.fetch(
            "SELECT status FROM stage_results WHERE model=$1 AND version=$2 AND stage=$3",
            model,
            version,
            stage,
        )
        return rows[0]["status"] if rows else None

    def artifact(self, name: str, payload: bytes | None = None) -> dict[str, Any]:
        """A real artifact under the root: a fitted skops model, or the given pickle bytes."""
        path = self.root / name
        if payload is None:
            rng = np.random.default_rng(3)
            x = rng.random((50, 2))
            sio.dump(LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int)), path)
            fmt = "skops"
        else:
            path.write_bytes(payload)
            fmt = "pickle"
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        return {"uri": path.as_uri(), "sha256": sha, "format": fmt}


def make_settings(infra: Infra, prefix: str, schema: str, config: Path, root: Path) -> Settings:
    return infra.settings(
        "svc-gatekeeper",
        database_url=infra.database_url,
        topic_prefix=prefix,
        db_schema=schema,
        http_port=0,
        config=config,
        artifact_root=root,
        outbox_poll_interval_s=0.2,
        retry_initial_backoff_s=0.05,
    )


async def drop_schema(infra: Infra, schema: str) -> None:
    conn = await asyncpg.connect(infra.database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def gk(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gatekeeper]:
    unique = uuid.uuid4().hex[:10]
    base = tmp_path_factory.mktemp("gatekeeper")
    config = base / "mlcp.yaml"
    config.write_text(config_text())
    root = base / "artifacts"
    root.mkdir()
    settings = make_settings(infra, f"t{unique}.", f"gatekeeper_{unique}", config, root)
    await create_topics(infra.admin, [settings.topic(k.TYPE) for k in OUTPUTS])
    runtime = build(settings, gatekeeper=GatekeeperSettings(sweep_interval_s=0.3))
    await runtime.start()
    try:
        yield Gatekeeper(infra, settings, runtime, root)
    finally:
        await runtime.stop()
        await drop_schema(infra, settings.db_schema or "")


def production(accuracy: float = 0.93) -> dict[str, Any]:
    return {"version": "0.9.0", "metrics": {"accuracy": accuracy}}


async def test_all_automatic_dag_passes_with_evidence(gk: Gatekeeper) -> None:
    version = registered(
        "1.0.0", model="auto", baseline=production(), artifact=gk.artifact("auto.skops")
    )
    await gk.send(version)
    [passed] = await gk.wait_emitted(GatePassed, "auto")
    assert passed == GatePassed(
        model="auto", version="1.0.0", stages=("quality", "data", "baseline", "scan")
    )
    checks = {c.stage: c for c in await gk.emitted(CheckPassed, "auto")}
    assert set(checks) == {"quality", "data", "baseline", "scan"}
    baseline = checks["baseline"].evidence[0]
    assert (baseline.observed, baseline.operator, baseline.threshold) == (0.95, ">=", 0.93)
    assert [e.metric for e in checks["scan"].evidence] == [
        "artifact_sha256_match",
        "unsafe_globals",
    ]
    assert await gk.emitted(GateFailed, "auto") == []
    rows = await gk.fetch("SELECT status FROM candidates WHERE model='auto'")
    assert [r["status"] for r in rows] == ["passed"]


def _low_completeness() -> list[dict[str, Any]]:
    return [
        {"dataset": "d", "batch_ids": ["b"], "sha256": "c" * 64, "rows": 5000, "completeness": 0.9}
    ]


@pytest.mark.parametrize(
    ("model", "overrides", "stage", "reason"),
    [
        (
            "f-metrics",
            {"metrics": {"accuracy": 0.91, "latency_p95_ms": 150.0}},
            "quality",
            "accuracy 0.91 fails >= 0.92",
        ),
        ("f-data", {"datasets": _low_completeness()}, "data", "completeness 0.9 fails >= 0.98"),
        (
            "f-baseline",
            {"baseline": production(accuracy=0.97)},
            "baseline",
            "accuracy 0.95 fails >= 0.97 (production 0.9.0: accuracy 0.97)",
        ),
        ("f-hash", {"sha256": "0" * 64}, "scan", "sha256 "),
    ],
)
async def test_each_failing_kind_ends_the_dag_with_evidence(
    gk: Gatekeeper, model: str, overrides: dict[str, Any], stage: str, reason: str
) -> None:
    artifact = gk.artifact(f"{model}.skops")
    if "sha256" in overrides:
        artifact["sha256"] = overrides.pop("sha256")
    await gk.send(registered("1.0.0", model=model, artifact=artifact, **overrides))
    [failed] = await gk.wait_emitted(GateFailed, model)
    assert failed.stage == stage
    assert failed.reason.startswith(reason)
    assert any(e.satisfied is False for e in failed.evidence)
    assert await gk.emitted(GatePassed, model) == []
    rows = await gk.fetch("SELECT status, reason FROM candidates WHERE model=$1", model)
    assert (rows[0]["status"], rows[0]["reason"]) == ("failed", failed.reason)


def was_created(path: Path) -> bool:
    """Whether the payload's marker file exists (sync: a single stat)."""
    return path.exists()


class ShellOnLoad:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


async def test_malicious_pickle_is_rejected_and_never_loaded(gk: Gatekeeper) -> None:
    marker = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    payload = pickle.dumps({"clf": ShellOnLoad(f"touch {marker}")}, protocol=4)
    artifact = gk.artifact("evil.pkl", payload)
    await gk.send(registered("1.0.0", model="f-scan", artifact=artifact))
    [failed] = await gk.wait_emitted(GateFailed, "f-scan")
    assert (failed.stage, failed.kind) == ("scan", "security_scan")
    assert failed.reason == "picklescan: unsafe posix.system"
    unsafe = failed.evidence[1]
    assert (unsafe.metric, unsafe.observed, unsafe.threshold) == ("unsafe_globals", 1.0, 0.0)
    # The three stages before it passed: the scan really ran after its dependencies.
    assert {c.stage for c in await gk.emitted(CheckPassed, "f-scan")} == {
        "quality",
        "data",
        "baseline",
    }
    assert not was_created(marker)


async def test_external_report_and_manual_approval_pass_the_gate(gk: Gatekeeper) -> None:
    await gk.send(registered("2.0.0", model="human"))
    assert await wait_for(
        lambda: _is(gk.stage_status("human", "2.0.0", "review"), "waiting"), what="review waits"
    )
    assert await gk.emitted(ApprovalRequested, "human") == []  # approve also needs review
    await gk.send(
        ExternalCheckReported(
            model="human",
            version="2.0.0",
            check="code-review",  # the stage's `check` name, as CI knows it
            status="passed",
            reporter="github-ci",
            url="https://ci.example/run/1",
        )
    )
    [requested] = await gk.wait_emitted(ApprovalRequested, "human")
    assert requested.stage == "approve"
    assert requested.expires_at is not None
    # The registry's API emits this after checking the approver role; here the test does.
    await gk.send(
        ApprovalGranted(model="human", version="2.0.0", stage="approve", approver="alice")
    )
    [passed] = await gk.wait_emitted(GatePassed, "human")
    assert passed.stages == ("quality", "review", "approve")
    approve = next(c for c in await gk.emitted(CheckPassed, "human") if c.stage == "approve")
    assert approve.evidence[0].detail == "approved by alice"


async def test_rejection_fails_and_later_events_are_ignored_and_recorded(gk: Gatekeeper) -> None:
    await gk.send(registered("1.0.0", model="rejected"))
    await gk.send(
        ExternalCheckReported(
            model="rejected",
            version="1.0.0",
            check="code-review",
            status="passed",
            reporter="github-ci",
        )
    )
    await gk.wait_emitted(ApprovalRequested, "rejected")
    await gk.send(
        ApprovalRejected(
            model="rejected", version="1.0.0", stage="approve", approver="bob", comment="no"
        )
    )
    [failed] = await gk.wait_emitted(GateFailed, "rejected")
    assert failed.reason == "stage 'approve' rejected by bob: no"
    await gk.send(
        ApprovalGranted(model="rejected", version="1.0.0", stage="approve", approver="carol")
    )

    async def recorded() -> list[Any]:
        return await gk.fetch(
            "SELECT disposition, note FROM decisions WHERE model='rejected' AND actor='carol'"
        )

    [late] = await wait_for(recorded, what="the late approval recorded")
    assert late["disposition"] == "ignored"
    assert late["note"].startswith("the DAG already ended (failed:")
    assert await gk.emitted(GatePassed, "rejected") == []


async def test_duplicated_and_out_of_order_events_give_one_outcome(gk: Gatekeeper) -> None:
    """Approval first, the CI report twice, the registration re-sent and redelivered."""
    await gk.send(ApprovalGranted(model="ooo", version="1.0.0", stage="approve", approver="al"))
    report = ExternalCheckReported(
        model="ooo", version="1.0.0", check="code-review", status="passed", reporter="ci"
    )
    await gk.send(report)
    await gk.send(report)  # the same report again, as a new event
    registration = new_event(registered("1.0.0", model="ooo"), source="mlcp/registry")
    await gk.send_event(registration)
    await gk.send_event(registration)  # a redelivery: same CloudEvents id
    await gk.send(registered("1.0.0", model="ooo"))  # the registry re-sent it: new id
    [passed] = await gk.wait_emitted(GatePassed, "ooo")
    assert passed.stages == ("quality", "review", "approve")
    late = ExternalCheckReported(
        model="ooo", version="1.0.0", check="code-review", status="failed", reporter="ci"
    )
    await gk.send(late)

    async def all_recorded() -> list[Any] | None:
        rows = await gk.fetch(
            "SELECT kind, disposition FROM decisions WHERE model='ooo' ORDER BY id"
        )
        return rows if len(rows) == 4 else None

    rows = await wait_for(all_recorded, what="four decisions recorded")
    assert [(r["kind"], r["disposition"]) for r in rows] == [
        ("manual", "buffered"),
        ("external", "buffered"),
        ("external", "ignored"),
        ("external", "ignored"),
    ]
    # Exactly one outcome and one result per stage, whatever arrived twice.
    assert len(await gk.emitted(GatePassed, "ooo")) == 1
    assert await gk.emitted(GateFailed, "ooo") == []
    assert sorted(c.stage for c in await gk.emitted(CheckPassed, "ooo")) == [
        "approve",
        "quality",
        "review",
    ]
    # The approval was already there when the stage opened: nobody needed to be asked.
    assert await gk.emitted(ApprovalRequested, "ooo") == []


async def test_newer_candidate_supersedes_the_pending_older_one(gk: Gatekeeper) -> None:
    await gk.send(registered("1.0.0", model="sup"))
    assert await wait_for(lambda: _is(gk.stage_status("sup", "1.0.0", "review"), "waiting"))
    await gk.send(registered("1.1.0", model="sup"))
    [failed] = await gk.wait_emitted(GateFailed, "sup")
    assert (failed.version, failed.stage) == ("1.0.0", "review")
    assert failed.reason == "superseded by the newer candidate sup 1.1.0"
    await gk.send(registered("0.9.0", model="sup"))  # an older one arriving late
    failures = await gk.wait_emitted(GateFailed, "sup", count=2)
    assert failures[1].version == "0.9.0"
    assert failures[1].reason == "superseded by the newer candidate sup 1.1.0"
    rows = await gk.fetch("SELECT version, status FROM candidates WHERE model='sup'")
    assert {r["version"]: r["status"] for r in rows} == {
        "1.0.0": "superseded",
        "1.1.0": "running",
        "0.9.0": "superseded",
    }


async def test_external_check_times_out(gk: Gatekeeper) -> None:
    await gk.send(registered("1.0.0", model="slow"))
    [failed] = await gk.wait_emitted(GateFailed, "slow", timeout=30)
    assert (failed.stage, failed.kind) == ("review", "external")
    assert failed.reason == "external check timed out: stage 'review' got no decision within 2s"
    assert failed.evidence[0].threshold == 2.0
    # A report after the timeout changes nothing and is recorded as ignored.
    await gk.send(
        ExternalCheckReported(
            model="slow", version="1.0.0", check="code-review", status="passed", reporter="ci"
        )
    )

    async def recorded() -> list[Any]:
        return await gk.fetch("SELECT disposition FROM decisions WHERE model='slow'")

    assert [r["disposition"] for r in await wait_for(recorded)] == ["ignored"]


async def test_unconfigured_model_is_recorded_and_gets_no_gate_events(gk: Gatekeeper) -> None:
    await gk.send(registered("1.0.0", model="nobody"))

    async def recorded() -> list[Any]:
        return await gk.fetch("SELECT status, reason FROM candidates WHERE model='nobody'")

    [row] = await wait_for(recorded)
    assert row["status"] == "ignored"
    assert row["reason"] == "model 'nobody' is not configured in MLCP_CONFIG"
    assert await gk.emitted(GateFailed, "nobody") == []


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_deadlines_survive_a_restart(infra: Infra, tmp_path: Path) -> None:
    """A deadline that passes while the service is down fails the stage right after restart."""
    unique = uuid.uuid4().hex[:10]
    config = tmp_path / "mlcp.yaml"
    config.write_text(
        f'models:\n  late: {{dataset: d, label: y, train: "m:f", gates: {HUMAN % "1s"}}}\n'
    )
    settings = make_settings(infra, f"t{unique}.", f"gatekeeper_{unique}", config, tmp_path)
    await create_topics(infra.admin, [settings.topic(k.TYPE) for k in OUTPUTS])
    # A sweep that never comes round while the first instance runs.
    first = build(settings, gatekeeper=GatekeeperSettings(sweep_interval_s=3600))
    await first.start()
    other = Gatekeeper(infra, settings, first, tmp_path)
    try:
        await other.send(registered("1.0.0", model="late"))
        assert await wait_for(lambda: _is(other.stage_status("late", "1.0.0", "review"), "waiting"))
        await first.stop()
        second = build(settings, gatekeeper=GatekeeperSettings(sweep_interval_s=3600))
        await wait_for(lambda: _deadline_passed(other), what="the deadline to pass")
        await second.start()
        other.runtime = second
        try:
            [failed] = await other.wait_emitted(GateFailed, "late")
            assert failed.reason.startswith("external check timed out")
        finally:
            await second.stop()
    finally:
        await first.stop()
        await drop_schema(infra, settings.db_schema or "")


async def _deadline_passed(gk: Gatekeeper) -> bool:
    rows = await gk.fetch("SELECT deadline < now() AS due FROM stage_results WHERE model='late'")
    return any(r["due"] for r in rows)


async def test_http_api_shows_a_candidate_with_its_evidence(gk: Gatekeeper) -> None:
    await gk.send(registered("1.0.0", model="api", metrics={"accuracy": 0.5}))
    await wait_for(lambda: _has_failure(gk, "api", "1.0.0"), what="1.0.0 failed")
    transport = httpx.ASGITransport(app=gk.runtime.http_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://gk") as client:
        found = await client.get("/candidates/api/1.0.0")
        missing = await client.get("/candidates/api/9.9.9")
        metrics = (await client.get("/metrics")).text
    assert found.status_code == 200
    body = found.json()
    assert (body["status"], body["reason"]) == ("failed", "accuracy 0.5 fails >= 0.92")
    quality = next(s for s in body["stages"] if s["stage"] == "quality")
    assert quality["evidence"][0] == {
        "metric": "accuracy",
        "observed": 0.5,
        "operator": ">=",
        "threshold": 0.92,
        "satisfied": False,
        "detail": None,
    }
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no candidate api 9.9.9 is known to the gatekeeper"}
    assert 'mlcp_gatekeeper_stage_results_total{kind="metrics",outcome="failed"}' in metrics
    assert "mlcp_gatekeeper_scan_duration_seconds_count" in metrics


async def _has_failure(gk: Gatekeeper, model: str, version: str) -> bool:
    return any(f.version == version for f in await gk.emitted(GateFailed, model))
