"""Our wire format is the CloudEvents SDK's JSON structured format, in both directions."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent
from cloudevents.v1 import conversion as legacy_conversion
from cloudevents.v1.http import CloudEvent as LegacyEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlcp.contracts import EVENT_TYPES, CloudEvent, RunFinished, decode_event, encode_event
from tests.contracts.contract_examples import EXAMPLES
from tests.contracts.contract_strategies import events

pytestmark = pytest.mark.contracts

FORMAT = JSONFormat()


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_sdk_reads_ours_and_we_read_the_sdks(event_type: str, data: st.DataObject) -> None:
    event: CloudEvent[Any] = data.draw(events(EVENT_TYPES[event_type]))
    raw = encode_event(event)

    sdk = FORMAT.read(None, raw)
    assert sdk.get_specversion() == "1.0"
    assert sdk.get_id() == event.id
    assert sdk.get_source() == event.source
    assert sdk.get_type() == event.type
    assert sdk.get_subject() == event.subject
    assert sdk.get_time() == event.time
    assert sdk.get_datacontenttype() == "application/json"
    assert sdk.get_extension("correlationid") == event.correlationid
    assert sdk.get_extension("causationid") == event.causationid
    assert sdk.get_data() == event.data.model_dump(mode="json")

    assert decode_event(FORMAT.write(sdk), expected_type=event_type) == event


def test_event_built_by_the_sdk_decodes() -> None:
    when = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    sdk = SdkEvent(
        {
            "type": "mlcp.data.arrived.v1",
            "source": "pipeline/churn",
            "subject": "churn-events",
            "time": when,
            "datacontenttype": "application/json",
            "correlationid": "corr-1",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
        EXAMPLES["mlcp.data.arrived.v1"],
    )
    event = decode_event(FORMAT.write(sdk), expected_type="mlcp.data.arrived.v1")
    assert event.id == sdk.get_id()
    assert event.time == when
    assert event.correlationid == "corr-1"
    assert event.causationid is None
    assert event.extensions == {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    }
    assert event.data.rows == 600
    # Extension attributes we do not model survive a re-encode.
    assert json.loads(encode_event(event))["traceparent"] == sdk.get_extension("traceparent")


def test_sdk_without_datacontenttype_defaults_to_json() -> None:
    sdk = SdkEvent(
        {"type": "mlcp.run.started.v1", "source": "mlcp/trainer", "subject": "churn"},
        EXAMPLES["mlcp.run.started.v1"],
    )
    event = decode_event(FORMAT.write(sdk))
    assert event.datacontenttype == "application/json"


def test_legacy_sdk_api_round_trip() -> None:
    payload = EXAMPLES["mlcp.run.finished.v1"]
    legacy = LegacyEvent(
        {
            "type": "mlcp.run.finished.v1",
            "source": "mlcp/trainer",
            "subject": "churn",
            "datacontenttype": "application/json",
            "correlationid": "corr-9",
        },
        payload,
    )
    event = decode_event(legacy_conversion.to_json(legacy))
    assert event.id == legacy["id"]
    assert event.data == RunFinished.model_validate(payload)

    back = legacy_conversion.from_json(LegacyEvent, encode_event(event))
    assert back["id"] == event.id
    assert back["type"] == "mlcp.run.finished.v1"
    assert back["correlationid"] == "corr-9"
    assert back.data == json.loads(encode_event(event))["data"]
