"""A minimal service built on mlcp.runtime, run as a real process by the runtime's crash tests.

Usage: ``python tests/integration/runtime_app.py consume|relay`` with ``MLCP_SERVICE_NAME``,
``MLCP_TOPIC_PREFIX`` and the usual ``MLCP_*`` settings in the environment.

* ``consume``: applies DataArrived into ``ledger`` and emits TrainingRequested through the outbox.
  A batch id starting with ``fail-`` makes the handler raise (to exercise retries and the DLQ).
* ``consume-batch``: the same through ``on_batch`` (one transaction per Kafka batch).
* ``consume-catalog`` / ``consume-catalog-batch``: every topic of the catalog, each event
  recorded in ``applied`` (topic, event id), with the single-record / the batch consumers.
* ``relay``: only runs the outbox relay and exits once the outbox is empty.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from mlcp.contracts import JSON_TOPICS, CloudEvent, DataArrived, TrainingRequested
from mlcp.runtime import ServiceRuntime, Tx
from mlcp.runtime.logs import setup_logging

MIGRATIONS = Path(__file__).with_name("ledger_migrations")


async def on_data_arrived(event: CloudEvent[Any], tx: Tx) -> None:
    data: DataArrived = event.data
    if data.batch_id.startswith("fail-"):
        raise RuntimeError(f"refusing batch {data.batch_id}")
    await tx.conn.execute(
        "INSERT INTO ledger (event_id, dataset, batch_id, rows) VALUES ($1, $2, $3, $4)",
        event.id,
        data.dataset,
        data.batch_id,
        data.rows,
    )
    await tx.emit(
        TrainingRequested(
            model=data.dataset,
            reason="data_threshold",
            dataset=data.dataset,
            rows_since_last_run=data.rows,
            threshold=1,
        )
    )


async def on_data_arrived_batch(events: list[CloudEvent[Any]], tx: Tx) -> None:
    batch: list[DataArrived] = [e.data for e in events]
    failing = [d.batch_id for d in batch if d.batch_id.startswith("fail-")]
    if failing:
        raise RuntimeError(f"refusing batch {failing[0]}")
    await tx.conn.executemany(
        "INSERT INTO ledger (event_id, dataset, batch_id, rows) VALUES ($1, $2, $3, $4)",
        [(e.id, d.dataset, d.batch_id, d.rows) for e, d in zip(events, batch, strict=True)],
    )


async def record_applied(event: CloudEvent[Any], tx: Tx) -> None:
    await tx.conn.execute(
        "INSERT INTO applied (topic, event_id) VALUES ($1, $2)", event.type, event.id
    )


async def record_applied_batch(events: list[Any], tx: Tx) -> None:
    # CloudEvents, or the WireEvents of the high-volume types: both have .type and .id.
    await tx.conn.executemany(
        "INSERT INTO applied (topic, event_id) VALUES ($1, $2)", [(e.type, e.id) for e in events]
    )


def build_catalog(batch: bool) -> ServiceRuntime:
    runtime = ServiceRuntime(
        os.environ["MLCP_SERVICE_NAME"], default_port=0, migrations_dir=MIGRATIONS
    )
    for event_type in JSON_TOPICS:
        if batch:
            runtime.on_batch(event_type, record_applied_batch, max_records=200)
        else:
            runtime.on(event_type, record_applied)
    return runtime


def build(batch: bool = False) -> ServiceRuntime:
    runtime = ServiceRuntime(
        os.environ["MLCP_SERVICE_NAME"], default_port=0, migrations_dir=MIGRATIONS
    )
    if batch:
        runtime.on_batch(DataArrived.TYPE, on_data_arrived_batch, max_records=200)
    else:
        runtime.on(DataArrived.TYPE, on_data_arrived)
    return runtime


async def relay_until_empty() -> None:
    runtime = ServiceRuntime(
        os.environ["MLCP_SERVICE_NAME"], default_port=0, migrations_dir=MIGRATIONS
    )
    await runtime.start(relay=False)
    assert runtime.relay is not None
    try:
        await runtime.relay.drain()
    finally:
        await runtime.stop()


def main() -> None:
    mode = sys.argv[1]
    setup_logging(os.environ["MLCP_SERVICE_NAME"], level="INFO", fmt="text")
    if mode == "consume":
        build().run()
    elif mode == "consume-batch":
        build(batch=True).run()
    elif mode == "consume-catalog":
        build_catalog(batch=False).run()
    elif mode == "consume-catalog-batch":
        build_catalog(batch=True).run()
    elif mode == "relay":
        asyncio.run(relay_until_empty())
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
