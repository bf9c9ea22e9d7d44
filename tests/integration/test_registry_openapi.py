"""schemathesis against the registry's published OpenAPI document.

The registry runs as a real process (uvicorn, real PostgreSQL and Kafka) with some state in it;
schemathesis (its CLI, as CI would run it) generates valid and invalid requests for every
operation — its examples, coverage, fuzzing and stateful phases (the stateful one follows the
document's links: a new token → its grants → their revocation) as the bootstrap admin, then the
examples, coverage and fuzzing phases with no token at all. Every answer must be no server
error, have a status code and content type the document declares for the operation, headers
it declares, and a body matching its schema.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.builders import drop_schema, wait_ready
from tests.conftest import Infra, free_port, wait_for
from tests.integration.registry_support import BOOTSTRAP_TOKEN, CONFIG, run_finished

pytestmark = pytest.mark.integration

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


async def test_schemathesis_finds_no_server_error_and_every_answer_documented(
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

    try:
        await wait_ready(proc, base, timeout=60)
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

        authenticated = ["--header", f"Authorization: Bearer {BOOTSTRAP_TOKEN}"]
        runs = [
            (authenticated, "examples,coverage,fuzzing,stateful", "20"),
            ([], "examples,coverage,fuzzing", "5"),  # no token: every answer a documented 401
        ]
        reports = []
        for extra, phases, examples in runs:
            cli = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{base}/openapi.json",
                "--checks",
                CHECKS,
                *extra,
                "--max-examples",
                examples,
                "--phases",
                phases,
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
            failed = report[-8000:] + "\n--- registry log ---\n" + proc.output()
            assert cli.returncode == 0, failed
            assert re.search(r"\d+ generated, \d+ passed", report), failed
            for failure in ("Server error", "Undocumented", "Response violates schema"):
                assert failure not in report, failed
            reports.append(report)
        # The stateful phase ran through the links (it is skipped when it finds none).
        assert "✅ Stateful" in reports[0], reports[0][-4000:]
        assert json.dumps(spec)  # the document itself is valid JSON
    finally:
        proc.stop()
        await drop_schema(infra.database_url, schema)
