"""The monitor process SIGKILLed after a prediction batch's transaction committed but before its
Kafka offsets were: the restarted process gets the batch again and applies nothing twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from mlcp.contracts import DriftDetected, PredictionLogged
from tests.conftest import Infra, free_port, wait_for
from tests.integration.test_monitor_flow import CONFIG, Harness, predictions, registered
from tests.integration.test_runtime_crash import wait_ready

pytestmark = pytest.mark.integration


def monitor_env(h: Harness, **extra: str) -> dict[str, str]:
    return {
        **h.infra.kafka_env("svc-monitor"),
        "MLCP_DATABASE_URL": h.infra.database_url,
        "MLCP_TOPIC_PREFIX": h.prefix,
        "MLCP_DB_SCHEMA": h.schema,
        "MLCP_CONFIG": str(h.config),
        "MLCP_LOG_FORMAT": "text",
        "MLCP_CONSUMER_SESSION_TIMEOUT_MS": "6000",
        **extra,
    }


async def test_a_crash_before_the_offset_commit_neither_loses_nor_double_counts(
    infra: Infra, unique: str, tmp_path: Path, spawn: Any
) -> None:
    config = tmp_path / "mlcp.yaml"
    config.write_text(CONFIG)
    h = Harness(infra, unique, config)
    await h.send([registered("1.0.0")])
    await h.start()  # in-process, only to project the version and commit that offset
    try:

        async def known() -> bool:
            return bool(await h.query("SELECT 1 FROM versions"))

        await wait_for(known, timeout=60, what="the version projected")
    finally:
        await h.stop()

    await h.send(predictions("1.0.0", 300, shift=1.5))  # window 1 (200 rows) drifts
    crashing = spawn(
        ["-m", "mlcp.monitor"],
        monitor_env(h, MLCP_CRASH_AT="consumer.after_commit", MLCP_HTTP_PORT=str(free_port())),
        "monitor-crash",
    )
    assert await crashing.wait_exit() == -9, crashing.output()
    first = await h.query("SELECT served FROM traffic")
    assert first, "the first batch was committed before the kill"
    applied_before = first[0]["served"]

    port = free_port()
    monitor = spawn(["-m", "mlcp.monitor"], monitor_env(h, MLCP_HTTP_PORT=str(port)), "monitor")
    await wait_ready(port, monitor)
    await h.wait_served("1.0.0", 300)
    (drift,) = await h.wait_emitted(DriftDetected.TYPE, 1, "DriftDetected")
    assert drift.window.size == 200
    assert [r["served"] for r in await h.query("SELECT served FROM traffic")] == [300], (
        f"redelivered records were applied again (first run applied {applied_before})"
    )
    decisions = await h.query("SELECT window_id FROM decisions WHERE kind = 'drift'")
    assert [r["window_id"] for r in decisions] == ["drift-1"]
    chunk_rows = await h.query("SELECT coalesce(sum(rows), 0) AS n FROM window_chunks")
    assert chunk_rows[0]["n"] == 100, "the open window holds exactly the 100 rows after it"
    inbox = await h.query(
        "SELECT count(*) AS n FROM mlcp_batch_inbox WHERE consumer LIKE '%prediction%'"
    )
    assert inbox[0]["n"] == 300
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    topic = f"{h.prefix}{PredictionLogged.TYPE}"
    duplicates = f'mlcp_monitor_events_handled_total{{outcome="duplicate",topic="{topic}"}}'
    assert f"{duplicates} {float(applied_before)}" in metrics, "the killed batch came back, dropped"
    monitor.stop()
    conn = await asyncpg.connect(infra.database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {h.schema} CASCADE")
    finally:
        await conn.close()
