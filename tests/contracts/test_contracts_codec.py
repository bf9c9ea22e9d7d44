"""The envelope, new_event, encode_event and every ContractError of decode_event."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from mlcp.contracts import (
    MAX_EVENT_BYTES,
    CloudEvent,
    ContractError,
    DataArrived,
    InvalidData,
    InvalidEnvelope,
    InvalidJson,
    PayloadTooLarge,
    RunFinished,
    RunStarted,
    TypeMismatch,
    UnknownEventType,
    decode_event,
    encode_event,
    new_event,
)
from tests.contracts.contract_examples import EXAMPLES

pytestmark = pytest.mark.contracts

ARRIVED = DataArrived.model_validate(EXAMPLES["mlcp.data.arrived.v1"])
STARTED = RunStarted.model_validate(EXAMPLES["mlcp.run.started.v1"])


def wire(**changes: Any) -> dict[str, Any]:
    """A valid encoded run.started event as a dict, with envelope ``changes``."""
    obj = json.loads(encode_event(new_event(STARTED, source="mlcp/trainer")))
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not ...}


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# --- new_event and the envelope -----------------------------------------------------------------
def test_new_event_defaults() -> None:
    before = datetime.now(UTC)
    event = new_event(ARRIVED, source="pipeline/churn")
    assert event.specversion == "1.0"
    assert event.type == "mlcp.data.arrived.v1" == DataArrived.TYPE
    assert event.subject == "churn-events"  # DataArrived is keyed by dataset
    assert event.datacontenttype == "application/json"
    assert uuid.UUID(event.id).version == 4
    assert before <= event.time <= datetime.now(UTC)
    assert event.time.tzinfo is UTC
    assert event.correlationid is None
    assert event.causationid is None
    assert event.data is ARRIVED
    assert new_event(STARTED, source="mlcp/trainer").subject == "churn"


def test_new_event_explicit_attributes() -> None:
    event = new_event(
        STARTED,
        source="mlcp/trainer",
        subject="other",
        correlationid="corr-1",
        causationid="cause-1",
        id="evt-1",
    )
    assert (event.id, event.subject, event.correlationid, event.causationid) == (
        "evt-1",
        "other",
        "corr-1",
        "cause-1",
    )


def test_new_event_rejects_non_contract_models() -> None:
    class Other(BaseModel):
        x: int = 1

    with pytest.raises(TypeError, match="not an mlcp event model"):
        new_event(Other(), source="mlcp/x")


def test_envelope_type_must_match_data() -> None:
    with pytest.raises(ValidationError, match="does not match"):
        CloudEvent[RunStarted](source="mlcp/trainer", type="mlcp.run.failed.v1", data=STARTED)


def test_envelope_rejects_bad_attributes() -> None:
    with pytest.raises(ValidationError, match="source"):
        new_event(STARTED, source="")
    with pytest.raises(ValidationError, match="id"):
        new_event(STARTED, source="mlcp/trainer", id="")
    with pytest.raises(ValidationError, match="correlationid"):
        new_event(STARTED, source="mlcp/trainer", correlationid="has space")


def test_envelope_is_frozen() -> None:
    event = new_event(STARTED, source="mlcp/trainer")
    with pytest.raises(ValidationError, match="frozen"):
        event.id = "changed"  # type: ignore[misc]


# --- encode -------------------------------------------------------------------------------------
def test_encoding_is_compact_utf8_json_in_attribute_order() -> None:
    event = new_event(
        STARTED,
        source="mlcp/trainer",
        id="e1",
        correlationid="c1",
    )
    text = encode_event(event).decode("utf-8")
    assert ": " not in text
    assert ", " not in text
    assert list(json.loads(text)) == [
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "subject",
        "datacontenttype",
        "correlationid",
        "data",
    ]  # absent causationid is omitted, not null
    assert json.loads(text)["time"].endswith("Z")


def test_non_ascii_is_utf8() -> None:
    approval = {**EXAMPLES["mlcp.approval.granted.v1"], "comment": "同意发布 ✅"}
    from mlcp.contracts import ApprovalGranted

    data = encode_event(new_event(ApprovalGranted(**approval), source="mlcp/registry"))
    assert "同意发布 ✅".encode() in data


def test_encode_refuses_oversized_events() -> None:
    profile = dict(EXAMPLES["mlcp.run.finished.v1"]["reference_profile"])
    big_sample = [1.0 / 3 + i for i in range(1000)]
    features = {
        f"f{i}": {**profile["features"]["tenure_months"], "sample": big_sample} for i in range(60)
    }
    payload = {
        **EXAMPLES["mlcp.run.finished.v1"],
        "feature_schema": [{"name": f"f{i}", "dtype": "float64"} for i in range(60)],
        "reference_profile": {"rows": 10, "features": features},
    }
    event = new_event(RunFinished.model_validate(payload), source="mlcp/trainer")
    with pytest.raises(PayloadTooLarge) as info:
        encode_event(event)
    assert info.value.reason == "too_large"
    assert info.value.event_id == event.id


# --- decode errors ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("record", "needle"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2]", "JSON list, not an object"),
        (b'"text"', "JSON str, not an object"),
        (b'{"specversion": NaN}', "NaN"),
    ],
)
def test_invalid_json(record: bytes, needle: str) -> None:
    with pytest.raises(InvalidJson, match=needle) as info:
        decode_event(record)
    assert info.value.reason == "invalid_json"


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"specversion": "0.3"}, "specversion"),
        ({"specversion": ...}, "specversion"),
        ({"type": ...}, "type"),
        ({"type": 7}, "type"),
        ({"id": ...}, "id: Field required"),
        ({"id": ""}, "id: String should have at least 1 character"),
        ({"source": ...}, "source"),
        ({"time": ...}, "time: Field required"),
        ({"time": "yesterday"}, "time"),
        ({"time": "2025-03-01T12:00:00"}, "time"),
        ({"datacontenttype": "text/plain"}, "datacontenttype"),
        ({"subject": ""}, "subject"),
        ({"data": ...}, "data: Field required"),
    ],
)
def test_invalid_envelope(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidEnvelope, match=needle) as info:
        decode_event(raw(wire(**changes)))
    assert info.value.reason == "invalid_envelope"


def test_unknown_event_type() -> None:
    record = raw(wire(type="mlcp.run.finished.v9"))
    with pytest.raises(UnknownEventType, match=r"mlcp\.run\.finished\.v9") as info:
        decode_event(record, expected_type="mlcp.run.finished.v1")
    assert info.value.reason == "unknown_type"
    assert info.value.event_type == "mlcp.run.finished.v9"


def test_type_mismatch() -> None:
    obj = wire()
    with pytest.raises(TypeMismatch) as info:
        decode_event(raw(obj), expected_type="mlcp.run.finished.v1")
    assert info.value.reason == "type_mismatch"
    assert "mlcp.run.started.v1" in str(info.value)
    assert "mlcp.run.finished.v1" in str(info.value)
    assert info.value.event_id == obj["id"]


def test_invalid_data_names_the_fields_concisely() -> None:
    obj = wire(data={**EXAMPLES["mlcp.run.started.v1"], "model": "Churn", "reason": "whim"})
    with pytest.raises(InvalidData) as info:
        decode_event(raw(obj), expected_type="mlcp.run.started.v1")
    message = str(info.value)
    assert info.value.reason == "invalid_data"
    assert "data.model" in message
    assert "data.reason" in message
    assert "'Churn'" in message
    assert "\n" not in message
    assert len(message) < 500
    assert info.value.event_type == "mlcp.run.started.v1"


def test_invalid_data_caps_the_error_list() -> None:
    payload = {**EXAMPLES["mlcp.prediction.logged.v1"]}
    payload["features"] = {f"f{i}": [i] for i in range(50)}
    obj = json.loads(encode_event(new_event(STARTED, source="mlcp/x")))
    obj.update(type="mlcp.prediction.logged.v1", data=payload)
    with pytest.raises(InvalidData, match=r"\(\+\d+ more\)") as info:
        decode_event(raw(obj))
    assert len(str(info.value)) < 600


def test_data_null_is_invalid_data() -> None:
    with pytest.raises(InvalidData, match="data"):
        decode_event(raw(wire(data=None)))


def test_payload_too_large() -> None:
    record = b" " * (MAX_EVENT_BYTES + 1)
    with pytest.raises(PayloadTooLarge) as info:
        decode_event(record)
    assert info.value.reason == "too_large"
    assert MAX_EVENT_BYTES == 1024 * 1024


def test_errors_are_value_errors_with_distinct_reasons() -> None:
    classes = [InvalidJson, InvalidEnvelope, UnknownEventType, TypeMismatch, InvalidData]
    classes.append(PayloadTooLarge)
    assert all(issubclass(c, ContractError) and issubclass(c, ValueError) for c in classes)
    assert len({c.reason for c in classes}) == len(classes)


# --- tolerant reading ---------------------------------------------------------------------------
def test_unknown_data_fields_and_extensions() -> None:
    obj = wire(
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        dataschema="mlcp.run.started.v1.json",
        not_valid_name="dropped",
        nested={"dropped": True},
    )
    obj["data"]["future_field"] = 1
    event = decode_event(raw(obj), expected_type="mlcp.run.started.v1")
    assert event.extensions == {
        "traceparent": obj["traceparent"],
        "dataschema": "mlcp.run.started.v1.json",
    }
    again = json.loads(encode_event(event))
    assert again["traceparent"] == obj["traceparent"]
    assert "not_valid_name" not in again
    assert "future_field" not in again["data"]


def test_null_optional_attributes_read_as_absent() -> None:
    event = decode_event(raw(wire(subject=None, correlationid=None)))
    assert event.subject is None
    assert event.correlationid is None


def test_time_is_normalised_to_utc() -> None:
    event = decode_event(raw(wire(time="2025-03-01T20:00:00.5+08:00")))
    assert event.time == datetime(2025, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)
    assert event.time.utcoffset() == timedelta(0)
