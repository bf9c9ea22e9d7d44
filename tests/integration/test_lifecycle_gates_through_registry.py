"""Registry and gatekeeper together, through real Kafka and PostgreSQL, no caller in between:
RunFinished → the registry registers 1.0.0 → the gatekeeper runs the DAG (metrics passes, the
external review waits) → CI reports the review through the registry API → the gatekeeper asks
for approval → an approver approves through the registry API → GatePassed → the registry puts
1.0.0 on `canary` with the rollout's traffic percent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from mlcp.contracts import (
    ApprovalRequested,
    GatePassed,
    ModelPromoted,
    decode_event,
    encode_event,
    new_event,
)
from mlcp.gatekeeper.app import build as build_gatekeeper
from mlcp.registry.app import build as build_registry
from mlcp.registry.auth import RegistrySettings
from mlcp.runtime import ServiceRuntime
from mlcp.runtime.telemetry import setup_tracing
from tests.conftest import Infra, wait_for
from tests.integration.kafka_tools import as_principal, produce
from tests.integration.registry_support import BOOTSTRAP_TOKEN, CONFIG, run_finished

pytestmark = pytest.mark.integration


@pytest.fixture
async def services(
    infra: Infra, unique: str, tmp_path: Path
) -> AsyncIterator[tuple[ServiceRuntime, ServiceRuntime]]:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        # A service process installs its tracer provider at start-up; these run in-process.
        setup_tracing("lifecycle-test")
    config = tmp_path / "mlcp.yaml"
    config.write_text(CONFIG)
    base = infra.settings(
        "svc-registry",
        topic_prefix=f"t{unique}.",
        http_port=0,
        config=config,
        consumer_commit_interval_s=0.1,
        consumer_session_timeout_ms=6000,
    )
    schemas = [f"registry_{unique}", f"gatekeeper_{unique}"]
    registry = build_registry(
        base.model_copy(update={"db_schema": schemas[0]}),
        RegistrySettings(bootstrap_token=BOOTSTRAP_TOKEN),
    )
    gatekeeper = build_gatekeeper(
        as_principal(base, "svc-gatekeeper").model_copy(update={"db_schema": schemas[1]})
    )
    await registry.start()
    await gatekeeper.start()
    try:
        yield registry, gatekeeper
    finally:
        await gatekeeper.stop()
        await registry.stop()
        conn = await asyncpg.connect(infra.database_url)
        try:
            for schema in schemas:
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


def api(registry: ServiceRuntime, token: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=registry.http_app())
    return httpx.AsyncClient(
        transport=transport,
        base_url="http://registry",
        headers={"Authorization": f"Bearer {token}"},
    )


async def outbox(runtime: ServiceRuntime, event_type: str) -> list[Any]:
    async with runtime.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT payload FROM mlcp_outbox WHERE topic = $1 ORDER BY id",
            runtime.settings.topic(event_type),
        )
    return [decode_event(bytes(r["payload"]), expected_type=event_type).data for r in rows]


async def lifecycle_rows(runtime: ServiceRuntime) -> list[tuple[Any, str | None]]:
    """Every event in a service's outbox with the trace id of its ``traceparent`` header."""
    async with runtime.pool.acquire() as conn:
        rows = await conn.fetch("SELECT payload, headers FROM mlcp_outbox ORDER BY id")
    found = []
    for row in rows:
        traceparent = json.loads(row["headers"]).get("traceparent")
        trace_id = traceparent.split("-")[1] if traceparent else None
        found.append((decode_event(bytes(row["payload"])), trace_id))
    return found


async def test_approval_and_ci_report_through_the_registry_api_open_the_canary(
    services: tuple[ServiceRuntime, ServiceRuntime], infra: Infra
) -> None:
    registry, gatekeeper = services
    async with api(registry, BOOTSTRAP_TOKEN) as admin:
        tokens = {}
        for role, principal in (("operator", "github-ci"), ("approver", "carol@example.com")):
            response = await admin.post(
                "/tokens", json={"principal": principal, "grants": [{"role": role}]}
            )
            assert response.status_code == 201, response.text
            tokens[role] = response.json()["token"]

    run = new_event(run_finished("run-gates-1"), source="mlcp/trainer", correlationid="life-7")
    await produce(
        infra.admin,
        registry.settings.topic(run.type),
        [(b"churn", encode_event(run), [])],
    )

    async def version_known() -> bool:
        async with api(registry, BOOTSTRAP_TOKEN) as client:
            return (await client.get("/models/churn/versions/1.0.0")).status_code == 200

    await wait_for(version_known, timeout=60, what="the registry to register 1.0.0")

    async with api(registry, tokens["operator"]) as ci:
        response = await ci.post(
            "/models/churn/versions/1.0.0/checks/code-review",
            json={"status": "passed", "url": "https://ci.example/run/7"},
        )
    assert response.status_code == 202, response.text

    async def approval_requested() -> list[Any]:
        return await outbox(gatekeeper, ApprovalRequested.TYPE)

    [requested] = await wait_for(approval_requested, timeout=60, what="ApprovalRequested")
    assert (requested.model, requested.version, requested.stage) == ("churn", "1.0.0", "approve")

    async with api(registry, tokens["approver"]) as approver:
        response = await approver.post(
            "/models/churn/versions/1.0.0/stages/approve/approve", json={"comment": "ship it"}
        )
    assert response.status_code in (200, 202), response.text

    async def canary_promoted() -> list[Any]:
        return await outbox(registry, ModelPromoted.TYPE)

    [promoted] = await wait_for(canary_promoted, timeout=60, what="ModelPromoted(canary)")
    assert (promoted.version, promoted.alias, promoted.traffic_percent) == ("1.0.0", "canary", 10)
    [passed] = await outbox(gatekeeper, GatePassed.TYPE)
    assert passed.stages == ("quality", "review", "approve")
    async with api(registry, tokens["approver"]) as reader:
        alias = (await reader.get("/models/churn/aliases/canary")).json()
    assert alias["version"] == "1.0.0"

    # One lifecycle: the CI report and the approval came through HTTP requests, yet every event
    # about 1.0.0 — the registry's and the gatekeeper's — carries the run's correlation id and
    # continues the trace its registration started.
    events = await lifecycle_rows(registry) + await lifecycle_rows(gatekeeper)
    # About the model (the audit chain's checkpoints are about the registry's log: some, as
    # for the tokens made above, belong to no model's lifecycle).
    events = [(event, trace) for event, trace in events if event.subject == "churn"]
    types = {event.type for event, _ in events}
    assert {
        "mlcp.model.registered.v1",
        "mlcp.check.reported.v1",
        "mlcp.approval.requested.v1",
        "mlcp.approval.granted.v1",
        "mlcp.gate.passed.v1",
        "mlcp.model.promoted.v1",
    } <= types
    assert {event.correlationid for event, _ in events} == {"life-7"}
    trace_ids = {trace_id for _, trace_id in events}
    assert len(trace_ids) == 1
    assert None not in trace_ids
