"""The registry's read cache and alias fast lane, without a database: fills, invalidation, the
in-flight write rule, expiry; the fast lane answers only cached lookups of permitted callers."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest

from mlcp.registry import cache as cache_module
from mlcp.registry.auth import Authenticator
from mlcp.registry.cache import ReadCache, channel, model_scope
from mlcp.registry.fastlane import AliasFastLane

pytestmark = pytest.mark.unit

BOOTSTRAP = "bootstrap-" + "x" * 40


class FakeConn:
    """Records the NOTIFYs a write transaction queues."""

    def __init__(self) -> None:
        self.notified: list[tuple[str, str]] = []

    async def execute(self, sql: str, channel: str, payload: str) -> None:
        assert "pg_notify" in sql
        self.notified.append((channel, payload))


def live_cache(**kwargs: Any) -> ReadCache:
    cache = ReadCache("postgresql://unused", "registry_x", **kwargs)
    cache._live = True  # as once the LISTEN connection is up
    return cache


def deliver(cache: ReadCache, conn: FakeConn) -> None:
    """PostgreSQL delivering the NOTIFYs of a committed transaction."""
    for channel_name, payload in conn.notified:
        cache._on_notify(None, 1, channel_name, payload)


def test_nothing_is_cached_while_the_listen_connection_is_down() -> None:
    cache = ReadCache("postgresql://unused", "registry_x")
    cache.put("m:churn", "production", "v1", cache.ticket())
    assert cache.get("m:churn", "production") is None
    live = live_cache()
    live.put("m:churn", "production", "v1", live.ticket())
    assert live.get("m:churn", "production") == "v1"
    live._lost()
    assert live.get("m:churn", "production") is None


async def test_a_write_keeps_its_scope_out_of_the_cache_until_its_notify_arrives() -> None:
    cache = live_cache()
    cache.put("m:churn", "production", "v1", cache.ticket())
    cache.put("m:other", "production", "o1", cache.ticket())
    conn = FakeConn()
    await cache.invalidate(conn, model_scope("churn"))
    assert conn.notified[0][0] == channel("registry_x")
    # Committed but not yet notified: reads bypass the cache and may not fill it.
    assert cache.get("m:churn", "production") is None
    cache.put("m:churn", "production", "v2", cache.ticket())
    assert cache.get("m:churn", "production") is None
    assert cache.get("m:other", "production") == "o1"  # other scopes are untouched
    deliver(cache, conn)
    assert cache.get("m:churn", "production") is None  # the old entry is gone
    cache.put("m:churn", "production", "v2", cache.ticket())
    assert cache.get("m:churn", "production") == "v2"
    assert cache.get("m:other", "production") == "o1"


def test_a_fill_that_raced_a_notify_is_dropped() -> None:
    cache = live_cache()
    ticket = cache.ticket()  # a read starts …
    cache._on_notify(None, 1, "c", "otherprocess.7 m:churn")  # … a write elsewhere commits
    cache.put("m:churn", "production", "stale", ticket)  # … the read ends with the old row
    assert cache.get("m:churn", "production") is None


async def test_a_write_that_never_commits_stops_blocking_after_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = live_cache()
    monkeypatch.setattr(cache_module, "_WRITE_DEADLINE_S", 0.0)
    await cache.invalidate(FakeConn(), "t:0123456789abcdef")  # rolled back: no NOTIFY
    cache.put("t:0123456789abcdef", "", {"row": 1}, cache.ticket())
    assert cache.get("t:0123456789abcdef") == {"row": 1}


def test_entries_expire() -> None:
    cache = live_cache(ttl_s=0.0)
    cache.put("m:churn", "production", "v1", cache.ticket())
    assert cache.get("m:churn", "production") is None


async def test_an_entry_being_read_is_loaded_again_before_it_expires() -> None:
    cache = live_cache(ttl_s=1.0)  # it would expire before the next round (ping_s 2 s): due
    rows = iter(["v1", "v2"])

    async def load() -> str:
        return next(rows)

    assert await cache.fill("m:churn", "production", load) == "v1"
    assert cache.get("m:churn", "production") == "v1"
    await cache._reload_due()
    assert cache.get("m:churn", "production") == "v2"


async def test_an_entry_nobody_reads_is_left_to_expire() -> None:
    cache = live_cache(ttl_s=1.0, keep_s=0.0)
    loads = 0

    async def load() -> str:
        nonlocal loads
        loads += 1
        return "v1"

    await cache.fill("m:churn", "production", load)
    await cache._reload_due()
    assert loads == 1


async def test_a_reload_that_raced_a_write_or_failed_changes_nothing() -> None:
    cache = live_cache(ttl_s=1.0)
    conn = FakeConn()
    rows = iter(["v1", "stale"])

    async def racing() -> str:
        row = next(rows)
        if row == "stale":  # a write commits and is notified while the reload's query runs
            await cache.invalidate(conn, model_scope("churn"))
            deliver(cache, conn)
        return row

    calls = 0

    async def failing() -> str:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError("connection reset")
        return "o1"

    await cache.fill("m:churn", "production", racing)
    await cache.fill("m:other", "production", failing)
    await cache._reload_due()
    assert cache.get("m:churn", "production") is None
    assert cache.get("m:other", "production") == "o1"  # the fill's, until it expires
    assert await cache.fill("m:gone", "production", _nothing) is None
    assert cache.get("m:gone", "production") is None


async def _nothing() -> None:
    return None


# --- the fast lane ------------------------------------------------------------------------------


class Downstream:
    """The FastAPI app behind the lane: records what reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(
    lane: AliasFastLane, path: str, headers: dict[str, str], method: str = "GET"
) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    await lane(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


async def test_fast_lane_answers_cached_lookups_of_permitted_callers_only() -> None:
    cache = live_cache()
    downstream = Downstream()
    lane = AliasFastLane(downstream, Authenticator(bootstrap_token=BOOTSTRAP, cache=cache), cache)
    admin = {"Authorization": f"Bearer {BOOTSTRAP}"}
    path = "/models/churn/aliases/production"

    assert (await call(lane, path, admin))[0] == 299  # not cached yet: FastAPI answers
    cache.put("m:churn", "production", ('"7"', b'{"version":"1.0.0"}'), cache.ticket())
    status, headers, body = await call(lane, path, admin)
    assert (status, body) == (200, b'{"version":"1.0.0"}')
    assert headers[b"etag"] == b'"7"'
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == b"19"
    status, headers, body = await call(lane, path, {**admin, "If-None-Match": '"7"'})
    assert (status, body, headers[b"etag"]) == (304, b"", b'"7"')
    assert (await call(lane, path, {**admin, "If-None-Match": '"6"'}))[0] == 200

    # Whatever the lane cannot prove from memory is FastAPI's to answer (401, 403, 422, 405).
    before = len(downstream.paths)
    for headers_, path_, method in [
        ({}, path, "GET"),
        ({"Authorization": "Basic abc"}, path, "GET"),
        ({"Authorization": "Bearer wrong-token"}, path, "GET"),
        ({"Authorization": "Bearer mlcp_0123456789abcdef_" + "a" * 43}, path, "GET"),
        (admin, path, "POST"),
        (admin, path + "/history", "GET"),
        (admin, "/models/churn/aliases/canary", "GET"),
    ]:
        assert (await call(lane, path_, headers_, method))[0] == 299
    assert len(downstream.paths) == before + 7
