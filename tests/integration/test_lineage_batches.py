"""From data to the registry's lineage, through real Kafka and PostgreSQL, trainer and registry
in-process: a pipeline announces two files, one of them twice under another batch id; the
ledger counts each file once, a real training runs on exactly those two, and the registry's
lineage lists every batch with its uri, rows and sha256 (and the re-announcement), under a
dataset digest computed by the recipe its schema documents."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from mlcp.contracts import RunFinished, new_event
from mlcp.examples.sklearn import write_batches
from mlcp.registry.app import build as build_registry
from mlcp.registry.auth import RegistrySettings
from mlcp.runtime import ServiceRuntime, Settings
from mlcp.trainer import run_store
from tests.conftest import Infra, wait_for
from tests.integration import test_trainer_trigger as trigger_tests
from tests.integration.kafka_tools import as_principal
from tests.integration.test_trainer_trigger import emitted, send, settings_for

pytestmark = pytest.mark.integration

start_trainer = trigger_tests.start_trainer  # the fixture, shared with the trigger tests
TOKEN = "bootstrap-" + "l" * 40
TRAINING_TIMEOUT = 300  # a child imports scikit-learn: slow on a loaded 2-core machine


@pytest.fixture
async def registry(infra: Infra, unique: str, tmp_path: Path) -> AsyncIterator[ServiceRuntime]:
    # The trainer's topics, as the registry's own principal.
    settings = as_principal(settings_for(infra, unique, tmp_path), "svc-registry").model_copy(
        update={"db_schema": f"registry_{unique}"}
    )
    runtime = build_registry(settings, RegistrySettings(bootstrap_token=TOKEN))
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
        conn = await asyncpg.connect(infra.database_url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS registry_{unique} CASCADE")
        finally:
            await conn.close()


async def lineage_of(registry: ServiceRuntime, version: str) -> dict[str, Any] | None:
    transport = httpx.ASGITransport(app=registry.http_app())
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://registry", headers=headers
    ) as client:
        response = await client.get(f"/models/churn/versions/{version}/lineage")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.timeout(900)
async def test_the_lineage_lists_every_batch_with_its_uri_rows_and_sha256(
    infra: Infra, unique: str, tmp_path: Path, start_trainer: Any, registry: ServiceRuntime
) -> None:
    settings: Settings = settings_for(infra, unique, tmp_path, threshold=600)  # same topics
    trainer = await start_trainer(settings, workers=1)
    first, second = write_batches(tmp_path / "data", batches=2, rows_per_batch=300, seed=9)
    sent = first.event("churn-events")
    # The same file again under another id (a re-run pipeline): counted once, recorded.
    again = sent.model_copy(update={"batch_id": f"{first.batch_id}-retry"})
    await send(settings, [new_event(sent, source="test"), new_event(again, source="test")])
    await send(settings, [new_event(second.event("churn-events"), source="test")])

    [finished] = await wait_for(
        lambda: emitted(settings, RunFinished.TYPE), timeout=TRAINING_TIMEOUT, what="RunFinished"
    )
    lineage = await wait_for(
        lambda: lineage_of(registry, "1.0.0"), timeout=60, what="the registry's lineage"
    )
    assert lineage["run"]["run_id"] == finished.data.run_id
    [dataset] = lineage["datasets"]
    assert dataset["batch_ids"] == [first.batch_id, second.batch_id]
    assert dataset["rows"] == 600, "the re-announced file is not trained on twice"
    assert dataset["batches"] == [
        {
            "batch_id": first.batch_id,
            "uri": first.uri,
            "rows": 300,
            "sha256": first.sha256,
            "duplicates": 1,
        },
        {
            "batch_id": second.batch_id,
            "uri": second.uri,
            "rows": 300,
            "sha256": second.sha256,
            "duplicates": 0,
        },
    ]
    # The dataset digest, by the recipe the RunFinished schema documents.
    recipe = "".join(f"{b['sha256']}\n" for b in dataset["batches"]).encode()
    assert dataset["sha256"] == hashlib.sha256(recipe).hexdigest()
    # The trainer's own lineage of the run names the re-announcement.
    async with trainer.pool.acquire() as conn:
        recorded = await run_store.run_lineage(conn, finished.data.run_id)
    assert recorded is not None
    [(retry,)] = [[d["batch_id"] for d in b["duplicates"]] for b in recorded["batches"][:1]]
    assert retry == f"{first.batch_id}-retry"
    assert recorded["batches"][1]["duplicates"] == []
