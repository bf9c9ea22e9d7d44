"""Publishing events from outside the services (data pipelines, inference services, scripts).

Pipelines own no outbox, so they publish directly with the durable producer (acks=all,
idempotence) and wait for the acknowledgement: when the command returns 0 the event is stored
by Kafka. Publishing the same CloudEvents id again is safe: consumers' inboxes drop it.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mlcp.artifacts.files import file_sha256
from mlcp.contracts import CloudEvent, encode_event, new_event
from mlcp.runtime.kafka import durable_producer, encode_headers
from mlcp.runtime.settings import Settings


def file_facts(path: Path) -> tuple[str, int, float]:
    """sha256 of the bytes, data rows and completeness (share of non-empty cells) of a CSV."""
    rows = cells = filled = 0
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for row in reader:
            rows += 1
            cells += len(row)
            filled += sum(1 for value in row if value.strip() != "")
    return file_sha256(path), rows, (filled / cells if cells else 1.0)


async def publish(
    settings: Settings,
    data: BaseModel,
    *,
    source: str,
    correlationid: str | None = None,
) -> CloudEvent[Any]:
    """Publish one event and wait for acks=all; returns the event sent."""
    event = new_event(data, source=source, correlationid=correlationid)
    producer = durable_producer(settings, client_id="mlcp-cli")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(event.type),
            value=encode_event(event),
            key=event.subject.encode() if event.subject else None,
            headers=encode_headers({"content-type": "application/cloudevents+json"}),
        )
    finally:
        await producer.stop()
    return event
