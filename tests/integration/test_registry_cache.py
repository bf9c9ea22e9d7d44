"""The registry's read cache against real PostgreSQL and Kafka: alias lookups and token checks
are answered from memory, yet every promotion, rollback, revocation and grant change — through
the API or an event, in this process or another — is visible to the next lookup."""

from __future__ import annotations

import asyncio
import json

import pytest

from mlcp.registry.cache import ReadCache, model_scope, token_scope
from mlcp.registry.fastlane import AliasFastLane
from tests.conftest import wait_for
from tests.integration.registry_support import (
    Registry,
    canary_healthy,
    degraded,
    gate_passed,
    registry,
    run_finished,
    viewer_token,
)

pytestmark = pytest.mark.integration
__all__ = ["registry"]

PATH = "/models/churn/aliases/production"


async def read_cache(reg: Registry) -> ReadCache:
    """The registry's cache, once its LISTEN connection is up."""
    lane = reg.runtime.http_app()  # the fast lane stands in front of everything served
    assert isinstance(lane, AliasFastLane)
    cache = lane.cache

    async def live() -> bool:
        return cache.live

    await wait_for(live, timeout=30, what="read cache live")
    return cache


async def production(reg: Registry, version: str) -> None:
    for event in (run_finished(f"run-{version}"), gate_passed(version), canary_healthy(version)):
        await reg.wait_handled(await reg.publish(event))


async def test_lookups_come_from_memory_and_every_write_is_visible_to_the_next_one(
    registry: Registry,
) -> None:
    cache = await read_cache(registry)
    await production(registry, "1.0.0")
    token, _ = await viewer_token(registry)
    async with registry.client(token) as viewer, registry.client() as admin:
        first = await viewer.get(PATH)
        assert first.json()["version"] == "1.0.0"
        assert cache.get(model_scope("churn"), "production") is not None
        # Proof the answer comes from memory: a change behind the registry's back (no NOTIFY)
        # is not seen, and the cached answer is byte for byte the route's.
        await registry.fetchval(
            "UPDATE aliases SET traffic_percent = 42 WHERE alias = 'production'"
        )
        again = await viewer.get(PATH)
        assert (again.content, again.headers["etag"]) == (first.content, first.headers["etag"])

        # A promotion through the API is visible to the very next lookup.
        await registry.wait_handled(await registry.publish(run_finished("run-1.0.1")))
        promoted = await admin.post(PATH, json={"version": "1.0.1"})
        assert promoted.status_code == 200, promoted.text
        assert (await viewer.get(PATH)).json()["version"] == "1.0.1"

        # So is every event-driven move, as soon as its handler's transaction committed.
        for _ in range(3):
            assert (await viewer.get(PATH)).json()["version"] == "1.0.1"  # cached again
        await production(registry, "1.0.2")
        answer = await viewer.get(PATH, headers={"If-None-Match": first.headers["etag"]})
        assert answer.status_code == 200
        assert (answer.json()["version"], answer.json()["status"]) == ("1.0.2", "production")
        await viewer.get(PATH)
        await registry.wait_handled(await registry.publish(degraded("1.0.2", "production")))
        rolled_back = (await viewer.get(PATH)).json()
        assert rolled_back["version"] == "1.0.1", rolled_back


async def test_a_reload_runs_the_fills_query_again(registry: Registry) -> None:
    """What the background reload runs (cache.py) reads the database again, after the request
    that filled the entry has ended: a change made behind the registry's back is in it."""
    cache = await read_cache(registry)
    await production(registry, "1.0.0")
    token, token_id = await viewer_token(registry)
    alias_key, token_key = (model_scope("churn"), "production"), (token_scope(token_id), "")
    async with registry.client(token) as viewer:

        async def cached() -> bool:
            assert (await viewer.get(PATH)).status_code == 200
            return alias_key in cache._entries and token_key in cache._entries

        await wait_for(cached, what="alias and token cached")
    await registry.fetchval("UPDATE aliases SET traffic_percent = 42 WHERE alias = 'production'")
    reload_alias, reload_token = cache._entries[alias_key].load, cache._entries[token_key].load
    assert reload_alias is not None
    assert reload_token is not None
    _, body = await reload_alias()
    assert json.loads(body)["traffic_percent"] == 42
    assert (await reload_token())["principal"] == "inference"


async def test_revocation_and_grant_expiry_apply_to_cached_tokens_at_once(
    registry: Registry,
) -> None:
    await read_cache(registry)
    await production(registry, "1.0.0")
    token, token_id = await viewer_token(registry)
    async with registry.client(token) as viewer, registry.client() as admin:
        for _ in range(3):
            assert (await viewer.get(PATH)).status_code == 200
        grant = (await admin.post(f"/tokens/{token_id}/grants", json={"role": "auditor"})).json()
        assert (await viewer.get("/audit")).status_code == 200
        revoked = await admin.delete(f"/tokens/{token_id}/grants/{grant['id']}")
        assert revoked.status_code == 204
        assert (await viewer.get("/audit")).status_code == 403
        assert (await viewer.get(PATH)).status_code == 200
        assert (await admin.delete(f"/tokens/{token_id}")).status_code == 204
        assert (await viewer.get(PATH)).status_code == 401

    # A grant that expires stops working at its expiry though the token's row stays cached.
    short, _ = await viewer_token(registry, ttl_seconds=2)
    async with registry.client(short) as viewer:
        assert (await viewer.get(PATH)).status_code == 200

        async def expired() -> bool:
            return (await viewer.get(PATH)).status_code == 403

        await wait_for(expired, timeout=10, interval=0.2, what="grant expired")


async def test_another_process_drops_its_entries_when_this_one_writes(registry: Registry) -> None:
    await read_cache(registry)
    other = ReadCache(registry.infra.database_url, registry.runtime.schema)
    task = asyncio.create_task(other.run())
    try:

        async def live() -> bool:
            return other.live

        await wait_for(live, timeout=30, what="second cache live")
        await production(registry, "1.0.0")
        await registry.wait_handled(await registry.publish(run_finished("run-1.0.1")))
        other.put(model_scope("churn"), "production", "1.0.0", other.ticket())
        other.put(model_scope("other"), "production", "9.0.0", other.ticket())
        async with registry.client() as admin:
            assert (await admin.post(PATH, json={"version": "1.0.1"})).status_code == 200

        async def dropped() -> bool:
            return other.get(model_scope("churn"), "production") is None

        await wait_for(dropped, timeout=10, interval=0.01, what="entry dropped by NOTIFY")
        assert other.get(model_scope("other"), "production") == "9.0.0"
    finally:
        other.stop()
        await task
    assert not other.live
