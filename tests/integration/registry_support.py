"""Fixtures and builders shared by the registry's integration tests (no tests of its own).

The registry runs in-process in the test's event loop against the real Kafka and PostgreSQL,
isolated by a topic prefix and its own schema, which is dropped afterwards.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from mlcp.contracts import (
    CanaryHealthy,
    CloudEvent,
    GateFailed,
    GatePassed,
    ModelDegraded,
    RunFinished,
    decode_event,
    encode_event,
    new_event,
)
from mlcp.contracts.base import EventData
from mlcp.registry.app import build
from mlcp.registry.auth import RegistrySettings
from mlcp.registry.keys import AuditSettings, load_keyring
from mlcp.runtime import ServiceRuntime, Settings
from tests.conftest import Infra, wait_for
from tests.contracts.contract_examples import EXAMPLES
from tests.integration.kafka_tools import owner_source, produce, read_all

BOOTSTRAP_TOKEN = "bootstrap-" + "x" * 40
CONFIG = """
models:
  churn:
    dataset: churn-events
    label: churned
    train: mlcp.examples.sklearn:train_logistic
    gates:
      - {name: quality, kind: metrics, require: {accuracy: ">= 0.9"}}
      - {name: review, kind: external, check: code-review}
      - {name: approve, kind: manual, depends_on: [quality, review]}
    rollout: {canary_percent: 10, rollback_window: 1h}
  direct:
    dataset: direct-events
    label: y
    train: m:train
    rollout: {canary_percent: 0}
"""
WINDOW = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:30:00Z", "size": 600}
CROSSED = [
    {
        "metric": "error_rate",
        "observed": 0.09,
        "operator": ">",
        "threshold": 0.05,
        "satisfied": True,
    }
]


def run_finished(run_id: str, model: str = "churn", **changes: Any) -> RunFinished:
    """A valid RunFinished (the contract example) with some fields changed."""
    data = copy.deepcopy(EXAMPLES[RunFinished.TYPE])
    data.update(run_id=run_id, model=model, baseline=None, **changes)
    return RunFinished.model_validate(data)


def gate_passed(version: str, model: str = "churn") -> GatePassed:
    return GatePassed(model=model, version=version, stages=("quality",))


def gate_failed(version: str, model: str = "churn") -> GateFailed:
    return GateFailed(
        model=model, version=version, stage="quality", kind="metrics", reason="accuracy 0.8 < 0.9"
    )


def canary_healthy(version: str, model: str = "churn") -> CanaryHealthy:
    return CanaryHealthy.model_validate({"model": model, "version": version, "window": WINDOW})


def degraded(version: str, alias: str, model: str = "churn") -> ModelDegraded:
    return ModelDegraded.model_validate(
        {"model": model, "version": version, "alias": alias, "evidence": CROSSED, "window": WINDOW}
    )


@dataclass
class Registry:
    """A running registry and ways to talk to it."""

    runtime: ServiceRuntime
    settings: Settings
    infra: Infra

    @property
    def runtime_key_id(self) -> str:
        """The id of the audit key this registry keys its rows with."""
        return load_keyring(AuditSettings()).active.key_id

    async def publish(self, data: EventData, *, id: str | None = None) -> CloudEvent[Any]:
        """Produce ``data`` on its (prefixed) topic as a new event, or re-send with ``id``."""
        event = new_event(data, source=owner_source(data.TYPE), id=id)
        await produce(
            self.infra.admin,
            self.settings.topic(event.type),
            [(event.subject.encode() if event.subject else None, encode_event(event), [])],
        )
        return event

    async def resend(self, event: CloudEvent[Any]) -> None:
        """Deliver the very same event (same CloudEvents id) again."""
        await produce(
            self.infra.admin,
            self.settings.topic(event.type),
            [(event.subject.encode() if event.subject else None, encode_event(event), [])],
        )

    def duplicates(self, event_type: str) -> float:
        """How many records of ``event_type`` the inbox dropped as already applied."""
        counter = self.runtime.metrics.events_handled.labels(
            self.settings.topic(event_type), "duplicate"
        )
        return float(counter._value.get())

    async def redeliver(self, event: CloudEvent[Any]) -> None:
        """Deliver ``event`` again (same CloudEvents id) and wait until the inbox dropped it."""
        before = self.duplicates(event.type)
        await self.resend(event)

        async def dropped() -> bool:
            return self.duplicates(event.type) > before

        await wait_for(dropped, timeout=30, what=f"redelivered {event.type} dropped")

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self.runtime.pool.acquire() as conn:
            return list(await conn.fetch(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.runtime.pool.acquire() as conn:
            return await conn.fetchval(sql, *args)

    async def handled(self, event: CloudEvent[Any]) -> bool:
        """Whether the inbox recorded ``event`` (its transaction committed)."""
        return bool(
            await self.fetchval("SELECT true FROM mlcp_inbox WHERE event_id = $1", event.id)
        )

    async def wait_handled(self, event: CloudEvent[Any]) -> None:
        async def done() -> bool:
            return await self.handled(event)

        await wait_for(done, timeout=30, what=f"{event.type} {event.id} handled")

    async def emitted(self, event_type: str) -> list[CloudEvent[Any]]:
        """Every event the registry published on ``event_type``'s topic so far (outbox drained)."""
        expected = len(await self.outbox(event_type))
        topic = self.settings.topic(event_type)

        async def published() -> list[Any] | None:
            records = await read_all(self.infra.admin, topic)
            return records if len(records) >= expected else None

        # The runtime's relay publishes in the background (or drain() does it now).
        assert self.runtime.relay is not None
        await self.runtime.relay.drain()
        records = [] if expected == 0 else await wait_for(published, what=f"{topic} published")
        return [decode_event(r.value, expected_type=event_type) for r in records]

    async def outbox(self, event_type: str) -> list[CloudEvent[Any]]:
        """Events of ``event_type`` written to the outbox (committed), in order."""
        rows = await self.fetch(
            "SELECT payload FROM mlcp_outbox WHERE topic = $1 ORDER BY id",
            self.settings.topic(event_type),
        )
        return [decode_event(bytes(r["payload"]), expected_type=event_type) for r in rows]

    def client(self, token: str | None = BOOTSTRAP_TOKEN) -> httpx.AsyncClient:
        """An HTTP client on the registry's ASGI app (in-process), with a bearer token."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        transport = httpx.ASGITransport(app=self.runtime.http_app())
        return httpx.AsyncClient(transport=transport, base_url="http://registry", headers=headers)


async def viewer_token(reg: Registry, **grant: Any) -> tuple[str, str]:
    """A new token (and its id) of principal ``inference`` with the viewer role."""
    async with reg.client() as admin:
        created = await admin.post(
            "/tokens", json={"principal": "inference", "grants": [{"role": "viewer", **grant}]}
        )
    assert created.status_code == 201, created.text
    return created.json()["token"], created.json()["id"]


@pytest.fixture
async def registry(infra: Infra, unique: str, tmp_path: Path) -> AsyncIterator[Registry]:
    """A started registry with its own topics prefix and schema, stopped and dropped after."""
    config = tmp_path / "mlcp.yaml"
    config.write_text(CONFIG)
    schema = f"registry_{unique}"
    settings = infra.settings(
        "svc-registry",
        database_url=infra.database_url,
        topic_prefix=f"t{unique}.",
        db_schema=schema,
        http_port=0,
        config=config,
        retry_initial_backoff_s=0.05,
        retry_max_backoff_s=0.2,
        handler_max_attempts=2,
        consumer_commit_interval_s=0.1,
        consumer_session_timeout_ms=6000,
    )
    runtime = build(settings, RegistrySettings(bootstrap_token=BOOTSTRAP_TOKEN))
    await runtime.start()
    try:
        yield Registry(runtime, settings, infra)
    finally:
        await runtime.stop()
        conn = await asyncpg.connect(infra.database_url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()
