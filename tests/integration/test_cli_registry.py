"""The registry commands of `mlcp` against a real registry process on real Kafka and PostgreSQL:
a RunFinished registers versions, the CLI lists them, approves, reports a check, promotes,
rolls back and verifies the audit chain; the registry's own state (its API, its audit table
and the events on the bus) says each action happened, and refusals come back as exit codes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from mlcp.cli.main import app
from mlcp.contracts import (
    ApprovalGranted,
    ExternalCheckReported,
    decode_event,
    encode_event,
    new_event,
)
from tests.builders import drop_schema, wait_ready
from tests.conftest import Infra, free_port, wait_for
from tests.integration.kafka_tools import produce, read_all
from tests.integration.registry_support import BOOTSTRAP_TOKEN, CONFIG, run_finished

pytestmark = pytest.mark.integration


@dataclass
class LiveRegistry:
    url: str
    prefix: str
    schema: str
    infra: Infra

    def cli(self, *args: str, token: str = BOOTSTRAP_TOKEN, env_columns: str = "") -> Any:
        """Run `mlcp ARGS` in-process against this registry (a token from the environment)."""
        env = {"MLCP_REGISTRY_URL": self.url, "MLCP_TOKEN": token}
        if env_columns:  # wide enough that a line is not wrapped
            env["COLUMNS"] = env_columns
        result = CliRunner().invoke(app, list(args), env=env)
        text = result.output + result.stderr
        assert "Traceback" not in text, text
        assert token not in text, "the token is never printed"
        return result

    def cli_json(self, *args: str, token: str = BOOTSTRAP_TOKEN) -> Any:
        result = self.cli(*args, "--json", token=token)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    async def api(self, route: str) -> Any:
        """The registry's own answer, read without the CLI."""
        headers = {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers) as client:
            response = await client.get(route)
        response.raise_for_status()
        return response.json()

    async def events(self, event_type: str) -> list[Any]:
        records = await read_all(self.infra.admin, f"{self.prefix}{event_type}")
        return [decode_event(r.value, expected_type=event_type).data for r in records]


@pytest.fixture
async def live(
    infra: Infra, unique: str, spawn: Any, tmp_path: Path
) -> AsyncIterator[LiveRegistry]:
    """`python -m mlcp.registry` on its own port, topic prefix and schema (dropped after)."""
    config = tmp_path / "mlcp.yaml"
    config.write_text(CONFIG)
    port = free_port()
    prefix, schema = f"t{unique}.", f"clireg_{unique}"
    env = {
        **infra.kafka_env("svc-registry"),
        "MLCP_DATABASE_URL": infra.database_url,
        "MLCP_TOPIC_PREFIX": prefix,
        "MLCP_DB_SCHEMA": schema,
        "MLCP_HTTP_PORT": str(port),
        "MLCP_CONFIG": str(config),
        "MLCP_REGISTRY_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN,
    }
    proc = spawn(["-m", "mlcp.registry"], env, "registry")
    url = f"http://127.0.0.1:{port}"
    await wait_ready(proc, url)
    try:
        yield LiveRegistry(url, prefix, schema, infra)
    finally:
        proc.stop()
        await drop_schema(infra.database_url, schema)


async def test_the_cli_drives_a_version_from_registration_to_rollback(
    live: LiveRegistry, infra: Infra, spawn: Any
) -> None:
    # Two finished runs (same code and params: the second is a patch) → versions 1.0.0, 1.0.1.
    for run_id in ("run-1", "run-2"):
        event = new_event(run_finished(run_id), source="mlcp/trainer")
        await produce(
            infra.admin,
            f"{live.prefix}{event.type}",
            [(b"churn", encode_event(event), [])],
        )

    async def registered() -> list[str] | None:
        body = await asyncio.to_thread(live.cli_json, "versions", "churn")
        found = [v["version"] for v in body["items"]]
        return found if len(found) == 2 else None

    # The model exists only once the first version is registered: 404 → exit 1 until then.
    async def model_known() -> bool:
        result = await asyncio.to_thread(live.cli, "aliases", "churn")
        return bool(result.exit_code == 0)

    await wait_for(model_known, timeout=60, what="churn registered")
    assert await wait_for(registered, timeout=60, what="two versions") == ["1.0.1", "1.0.0"]

    [model] = live.cli_json("models")["items"]
    assert (model["name"], model["latest_version"], model["production"]) == ("churn", "1.0.1", None)
    detail = live.cli_json("version", "churn", "1.0.1")
    assert (detail["run_id"], detail["status"], detail["bump"]) == ("run-2", "candidate", "patch")
    shown = live.cli("version", "churn", "1.0.1")
    assert shown.exit_code == 0
    assert "run-2" in shown.output
    assert "accuracy" in shown.output
    lineage = live.cli("lineage", "churn", "1.0.1", env_columns="250")
    assert lineage.exit_code == 0
    assert "run run-2" in lineage.output
    # Every batch with its rows, uri and sha256 (the contract example's two batches).
    for batch in run_finished("run-2").datasets[0].batches:
        line = f"batch {batch.batch_id}  {batch.rows} rows  {batch.uri}  sha256 {batch.sha256}"
        assert line in lineage.output
    assert "(re-announced 2×, counted once)" in lineage.output
    data = live.cli_json("lineage", "churn", "1.0.1")["datasets"][0]
    assert [b["sha256"] for b in data["batches"]] == [
        b.sha256 for b in run_finished("run-2").datasets[0].batches
    ]
    runs = live.cli_json("runs", "churn")
    assert [r["run_id"] for r in runs["items"]] == ["run-2", "run-1"]

    # An operator token for the CI system; approving is not its job (403 → exit 1).
    async with httpx.AsyncClient(
        base_url=live.url, headers={"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
    ) as client:
        response = await client.post(
            "/tokens", json={"principal": "ci-bot", "grants": [{"role": "operator"}]}
        )
        operator = response.raise_for_status().json()["token"]
    refused = live.cli("approve", "churn", "1.0.1", token=operator)
    assert refused.exit_code == 1
    assert "forbidden (403)" in refused.stderr
    assert "'approve' permission" in refused.stderr

    approved = live.cli("approve", "churn", "1.0.1", "--comment", "reviewed the metrics")
    assert approved.exit_code == 0, approved.stderr
    assert "approved churn 1.0.1 at stage 'approve'" in approved.output
    reported = live.cli(
        "check", "report", "churn", "1.0.1", "--check", "code-review", "--passed",
        "--url", "https://ci.example/run/1", "--detail", "2 approvals",
        token=operator,
    )  # fmt: skip
    assert reported.exit_code == 0, reported.stderr
    assert "reported review passed for churn 1.0.1" in reported.output
    unknown = live.cli("check", "report", "churn", "1.0.1", "--check", "nope", "--failed")
    assert unknown.exit_code == 1
    assert "not found (404)" in unknown.stderr

    # Promote 1.0.0, then 1.0.1 (1.0.0 becomes the rollback target), then roll back.
    first = live.cli("promote", "churn", "1.0.0", "--alias", "production", "--reason", "first")
    assert first.exit_code == 0, first.stderr
    assert "production (none) → 1.0.0" in first.output
    second = live.cli("promote", "churn", "1.0.1", "--alias", "production", token=operator)
    assert second.exit_code == 0, second.stderr
    assert "production 1.0.0 → 1.0.1" in second.output
    again = live.cli("promote", "churn", "1.0.1", "--alias", "production")
    assert again.exit_code == 1
    assert "conflict (409)" in again.stderr
    back = live.cli("rollback", "churn", "--reason", "latency regression", token=operator)
    assert back.exit_code == 0, back.stderr
    assert "production 1.0.1 → 1.0.0" in back.output

    # The registry's own view, read without the CLI.
    state = await live.api("/models/churn")
    assert state["aliases"] == {"production": "1.0.0"}
    assert state["rollout"]["production"] == "1.0.0"
    assert state["rollout"]["rollback_target"] is None
    assert (await live.api("/models/churn/versions/1.0.1"))["status"] == "archived"
    history = live.cli_json("alias", "history", "churn", "production")["items"]
    assert [(h["version"], h["actor"], h["reason"]) for h in history] == [
        ("1.0.0", "ci-bot", "latency regression"),
        ("1.0.1", "ci-bot", "manual promotion"),
        ("1.0.0", "bootstrap-admin", "first"),
    ]

    # The approval and the check reached the bus for the gatekeeper.
    async def approvals() -> list[Any]:
        return await live.events(ApprovalGranted.TYPE)

    [grant] = await wait_for(approvals, what="ApprovalGranted on the bus")
    assert (grant.version, grant.stage, grant.approver) == ("1.0.1", "approve", "bootstrap-admin")
    assert grant.comment == "reviewed the metrics"

    async def checks() -> list[Any]:
        return await live.events(ExternalCheckReported.TYPE)

    [check] = await wait_for(checks, what="ExternalCheckReported on the bus")
    # The registry names the check by its stage ("review", whose check is "code-review").
    assert (check.check, check.status, check.reporter) == ("review", "passed", "ci-bot")
    assert (check.url, check.details) == ("https://ci.example/run/1", "2 approvals")

    # The audit log holds every action, and its chain verifies — through the CLI and the DB.
    rows = live.cli_json("audit", "list", "--model", "churn")["items"]
    actions = [(r["action"], r["actor"]) for r in rows]
    assert actions == [
        ("registration", "mlcp/trainer"),
        ("registration", "mlcp/trainer"),
        ("approval", "bootstrap-admin"),
        ("check_reported", "ci-bot"),
        ("promotion", "bootstrap-admin"),
        ("promotion", "ci-bot"),
        ("rollback", "ci-bot"),
    ]
    conn = await asyncpg.connect(infra.database_url)
    try:
        total = await conn.fetchval(f"SELECT count(*) FROM {live.schema}.audit_log")
    finally:
        await conn.close()
    verified = live.cli("audit", "verify")
    assert verified.exit_code == 0
    assert f"intact: {total} rows checked" in verified.output
    auditless = live.cli("audit", "verify", token=operator)
    assert auditless.exit_code == 1
    assert "audit_read" in auditless.stderr

    # The real entry point: nowhere left to roll back to is a 409 → exit 1; no registry → 3.
    env = {"MLCP_REGISTRY_URL": live.url, "MLCP_TOKEN": operator}
    proc = spawn(["-m", "mlcp.cli", "rollback", "churn"], env, "cli-rollback")
    assert await proc.wait_exit() == 1
    assert "conflict (409): production has no previous version" in proc.output()
    gone = f"http://127.0.0.1:{free_port()}"
    proc = spawn(["-m", "mlcp.cli", "models", "--registry", gone], env, "cli-gone")
    assert await proc.wait_exit() == 3
    assert f"cannot reach the registry at {gone}" in proc.output()
    assert "Traceback" not in proc.output()
    assert operator not in proc.output()
