"""An event's follow-up carries its trace and its lineage: the W3C ``traceparent`` in the Kafka
headers continues the incoming trace, ``correlationid`` follows the lifecycle and
``causationid`` names the event that caused it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlcp.contracts import DataArrived, TrainingRequested, decode_event, encode_event, new_event
from tests.conftest import Infra, free_port, wait_for
from tests.integration.kafka_tools import create_topics, produce, read_all
from tests.integration.test_runtime_crash import arrived, env_for, wait_ready

pytestmark = pytest.mark.integration

APP = str(Path(__file__).with_name("runtime_app.py"))
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


async def test_follow_up_event_continues_trace_and_lineage(
    infra: Infra, unique: str, spawn: Any
) -> None:
    prefix, sink = f"t{unique}.", f"dst_{unique}"
    source_topic = f"{prefix}{DataArrived.TYPE}"
    follow_topic = f"{prefix}{TrainingRequested.TYPE}"
    await create_topics(infra.admin, [source_topic, follow_topic], partitions=1)
    cause = new_event(arrived("traced"), source="mlcp/test", correlationid="lifecycle-42")
    headers = [("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01".encode())]
    await produce(infra.admin, source_topic, [(b"ds", encode_event(cause), headers)])

    port = free_port()
    consumer = spawn([APP, "consume"], env_for(infra, sink, prefix, MLCP_HTTP_PORT=str(port)), "c")
    await wait_ready(port, consumer)

    async def follow_up() -> list[Any]:
        return await read_all(infra.admin, follow_topic)

    [record] = await wait_for(follow_up, timeout=60, what="the follow-up event")
    event = decode_event(record.value, expected_type=TrainingRequested.TYPE)
    assert event.correlationid == "lifecycle-42"
    assert event.causationid == cause.id
    assert event.source == f"mlcp/{sink}"
    assert record.key == b"ds"
    traceparent = dict(record.headers)["traceparent"].decode()
    version, trace_id, span_id, _flags = traceparent.split("-")
    assert (version, trace_id) == ("00", TRACE_ID), "the incoming trace continues"
    assert span_id != PARENT_SPAN, "the handler's own span is the parent of the follow-up"
