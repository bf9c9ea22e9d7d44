"""``mlcp events tail``: a readable live stream of the bus."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from datetime import UTC
from typing import Any

from mlcp.contracts import JSON_TOPICS, ContractError, decode_event
from mlcp.runtime.kafka import make_consumer
from mlcp.runtime.settings import Settings


def summarize(data: dict[str, object], limit: int = 6) -> str:
    """The first few scalar fields of an event's data, ``key=value``."""
    parts = []
    for key, value in data.items():
        if isinstance(value, str | int | float | bool) and value is not None:
            parts.append(f"{key}={value}")
        if len(parts) == limit:
            break
    return " ".join(parts)


def render(raw: bytes, topic: str, prefix: str) -> str:
    """One line per record: time, short type, subject, the data's main fields."""
    event_type = topic.removeprefix(prefix)
    short = event_type.removeprefix("mlcp.").rsplit(".", 1)[0]
    try:
        event = decode_event(raw, expected_type=event_type)
    except ContractError as exc:
        return f"{'!':>12} {short:<24} invalid record: {exc.reason}"
    data = json.loads(event.data.model_dump_json())
    when = event.time.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]
    return f"{when:>12} {short:<24} {event.subject or '-':<20} {summarize(data)}"


def json_line(record: Any, prefix: str) -> str:
    """One record as one line of JSON: where it sits on Kafka and the whole CloudEvent as sent
    (``event``), or, for a record that is not a valid event, why (``invalid``) and its bytes
    (``value_base64``)."""
    event_type = record.topic.removeprefix(prefix)
    raw: bytes = record.value or b""
    entry: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp,
        "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
    }
    try:
        decode_event(raw, expected_type=event_type)
        entry["event"] = json.loads(raw)
    except ContractError as exc:
        entry["invalid"] = exc.reason
        entry["value_base64"] = base64.b64encode(raw).decode()
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


async def tail(
    settings: Settings,
    emit: Callable[[Any], None],
    *,
    from_beginning: bool,
    types: list[str] | None,
    stop: asyncio.Event | None = None,
) -> None:
    """Hand every record of the mlcp topics to ``emit`` until ``stop`` is set (or forever)."""
    # The structured (JSON) events; the binary prediction batches are columnar data, not a
    # line each.
    wanted = [t for t in JSON_TOPICS if not types or any(s in t for s in types)]
    consumer = make_consumer(
        settings,
        *[settings.topic(t) for t in wanted],
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    try:
        while stop is None or not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            records = sorted(
                (r for recs in batch.values() for r in recs), key=lambda r: r.timestamp
            )
            for record in records:
                emit(record)
    finally:
        await consumer.stop()
