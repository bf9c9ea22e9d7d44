"""``mlcp events tail``: a readable live stream of the bus."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC

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


async def tail(
    settings: Settings,
    emit: Callable[[str], None],
    *,
    from_beginning: bool,
    types: list[str] | None,
    stop: asyncio.Event | None = None,
) -> None:
    """Print every event on the mlcp topics until ``stop`` is set (or forever)."""
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
                emit(render(record.value or b"", record.topic, settings.topic_prefix))
    finally:
        await consumer.stop()
