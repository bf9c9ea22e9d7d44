"""schemathesis against the registry's published OpenAPI document: no request gives a 5xx.

The registry runs as a real process (uvicorn, real PostgreSQL and Kafka) with some state in it;
schemathesis (its CLI, as CI would run it) generates valid and invalid requests for every
operation, authenticated as the bootstrap admin.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import Infra, free_port, wait_for
from tests.integration.test_registry_support import BOOTSTRAP_TOKEN, CONFIG, run_finished

pytestmark = pytest.mark.integration


async def test_schemathesis_finds_no_server_error(
    infra: Infra, unique: str, spawn: Any, tmp_path: Path
) -> None:
    config = tmp_path / "mlcp.yaml"
    config.write_text(CONFIG)
    port = free_port()
    schema = f"registry_{unique}"
    proc = spawn(
        ["-m", "mlcp.registry"],
        {
            **infra.kafka_env("svc-registry"),
            "MLCP_DATABASE_URL": infra.database_url,
            "MLCP_HTTP_PORT": str(port),
            "MLCP_TOPIC_PREFIX": f"t{unique}.",
            "MLCP_DB_SCHEMA": schema,
            "MLCP_CONFIG": str(config),
            "MLCP_REGISTRY_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN,
            "MLCP_LOG_FORMAT": "text",
        },
        "registry",
    )
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}

    async def ready() -> bool:
        assert proc.popen.poll() is None, proc.output()
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{base}/readyz", timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        await wait_for(ready, timeout=60, what="registry ready")
        # Give the generated requests something to find: a model with versions and aliases.
        from mlcp.contracts import encode_event, new_event
        from tests.integration.kafka_tools import produce

        for run_id in ("run-1", "run-2"):
            event = new_event(run_finished(run_id), source="mlcp/trainer")
            await produce(
                infra.admin,
                f"t{unique}.{event.type}",
                [(b"churn", encode_event(event), [])],
            )

        async def registered() -> bool:
            async with httpx.AsyncClient(headers=auth) as client:
                response = await client.get(f"{base}/models/churn/versions")
            return response.status_code == 200 and len(response.json()["items"]) == 2

        await wait_for(registered, timeout=30, what="two versions registered")
        async with httpx.AsyncClient(headers=auth) as client:
            spec = (await client.get(f"{base}/openapi.json")).json()
            promoted = await client.post(
                f"{base}/models/churn/aliases/production", json={"version": "1.0.0"}
            )
            assert promoted.status_code == 200, promoted.text
        assert spec["openapi"].startswith("3.")

        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{base}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--header",
            f"Authorization: Bearer {BOOTSTRAP_TOKEN}",
            "--max-examples",
            "10",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--workers",
            "1",
            "--seed",
            "1",
            "--suppress-health-check",
            "all",
            "--no-color",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        out, _ = await asyncio.wait_for(cli.communicate(), timeout=600)
        report = out.decode(errors="replace")
        print(report[-4000:])
        assert cli.returncode == 0, report[-8000:] + "\n--- registry log ---\n" + proc.output()
        assert " passed" in report
        assert "Server error" not in report
        assert json.dumps(spec)  # the document itself is valid JSON
    finally:
        proc.stop()
        conn = await asyncpg.connect(infra.database_url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()
