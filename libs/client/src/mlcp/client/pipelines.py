"""What data pipelines send: ``DataArrived`` when a batch of training data lands."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from mlcp.client.kafka import make_producer
from mlcp.client.settings import ClientSettings
from mlcp.contracts import CloudEvent, DataArrived, encode_event, new_event


async def emit_data_arrived_async(
    dataset: str,
    *,
    batch_id: str,
    uri: str,
    rows: int,
    sha256: str,
    completeness: float = 1.0,
    source: str = "mlcp-client/pipeline",
    correlationid: str | None = None,
    settings: ClientSettings | None = None,
) -> CloudEvent[Any]:
    """Announce a batch (``DataArrived``) and wait for Kafka's acks=all; returns the event.
    Sending the same event id twice is harmless: the trainer's inbox drops the repeat."""
    # A pipeline's principal is `pipeline` unless MLCP_KAFKA_USERNAME names another.
    settings = settings or ClientSettings.from_env(
        kafka_username=os.environ.get("MLCP_KAFKA_USERNAME") or "pipeline"
    )
    data = DataArrived(
        dataset=dataset,
        batch_id=batch_id,
        uri=uri,
        rows=rows,
        sha256=sha256,
        completeness=completeness,
    )
    event = new_event(data, source=source, correlationid=correlationid)
    producer = make_producer(settings, client_id="mlcp-client-pipeline")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(event.type),
            value=encode_event(event),
            key=event.subject.encode() if event.subject else None,
            headers=[("content-type", b"application/cloudevents+json")],
        )
    finally:
        await producer.stop()
    return event


def emit_data_arrived(dataset: str, **fields: Any) -> CloudEvent[Any]:
    """The synchronous ``emit_data_arrived_async``."""
    return asyncio.run(emit_data_arrived_async(dataset, **fields))
