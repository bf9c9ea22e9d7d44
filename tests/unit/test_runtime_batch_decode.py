"""The batch decoders accept exactly what ``decode_event`` accepts — the pydantic BatchDecoder of
mlcp.runtime.batch for every type, and the msgspec WireDecoder of mlcp.contracts.wire for
PredictionLogged / FeedbackReceived; the batch parser of mlcp.runtime.broker hands the records
over without per-record work.

Their contract: for every record, either the same event as ``decode_event`` (for a WireEvent:
the same fields with the same types and instants, extension attributes aside) or None (then the
consumer asks ``decode_event``, which raises the ContractError the dead letter carries). They
must never accept a record ``decode_event`` refuses, and a bad record must not stop the others
of its batch from taking the fast path.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlcp.contracts import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    ContractError,
    FeedbackReceived,
    PredictionLogged,
    decode_event,
    encode_event,
    new_event,
)
from mlcp.contracts.wire import WireDecoder, WireEvent, wire_decoder
from mlcp.runtime.batch import BatchDecoder
from tests.contracts.contract_strategies import STRATEGIES, events

pytestmark = pytest.mark.unit

PREDICTION = PredictionLogged.TYPE
FEEDBACK = FeedbackReceived.TYPE
WIRE_TYPES = (PREDICTION, FEEDBACK)


@pytest.fixture(params=["pydantic", "wire"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which batch decoder a test checks."""
    return str(request.param)


def decoder(kind: str, event_type: str) -> BatchDecoder | WireDecoder:
    if kind == "wire":
        found = wire_decoder(event_type)
        assert found is not None
        return found
    return BatchDecoder(event_type)


def fields(value: Any) -> Any:
    """A WireEvent as plain values, for a comparison with a pydantic model_dump."""
    if isinstance(value, dict):
        return {k: fields(v) for k, v in value.items()}
    if hasattr(value, "__struct_fields__"):
        return {name: fields(getattr(value, name)) for name in value.__struct_fields__}
    return value


def same_values(got: Any, expected: Any, where: str = "") -> None:
    """Equal values of equal types (bool is not int, int is not float); instants compared as
    instants, both aware."""
    if isinstance(expected, datetime):
        assert isinstance(got, datetime), where
        assert got.tzinfo is not None, where
        assert got == expected, where
        assert got.utcoffset() == expected.utcoffset(), where
        return
    assert type(got) is type(expected), f"{where}: {got!r} is not {expected!r}"
    if isinstance(expected, dict):
        assert sorted(got) == sorted(expected), where
        for key in expected:
            same_values(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list | tuple):
        assert len(got) == len(expected), where
        for k, (a, b) in enumerate(zip(got, expected, strict=True)):
            same_values(a, b, f"{where}[{k}]")
    else:
        assert got == expected, where


def same_event(got: Any, expected: Any) -> None:
    if isinstance(got, WireEvent):
        wanted = expected.model_dump(exclude=set(expected.model_extra or ()))
        same_values(fields(got), wanted)
    else:
        assert got == expected, "the fast path accepted what decode_event decodes otherwise"


def prediction(i: int, **changes: Any) -> dict[str, Any]:
    data = PredictionLogged(
        model="churn",
        version="1.0.0",
        request_id=f"r{i}",
        features={"age": 30 + i, "plan": "basic", "score": 0.5},
        prediction=1,
        latency_ms=3.5,
        ts=datetime(2026, 1, 1, tzinfo=UTC),
    )
    obj: dict[str, Any] = json.loads(encode_event(new_event(data, source="svc/inference")))
    for path, value in changes.items():
        target = obj
        *parents, last = path.split(".")
        for name in parents:
            target = target[name]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return obj


DELETE = object()


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def reference(value: bytes | None, event_type: str) -> Any:
    """decode_event's verdict: the event, or the ContractError's reason."""
    try:
        return decode_event(value or b"", expected_type=event_type)
    except ContractError as exc:
        return exc.reason


def check(
    values: list[bytes | None], event_type: str = PREDICTION, kind: str = "pydantic"
) -> list[Any]:
    fast = decoder(kind, event_type).decode(values)
    assert len(fast) == len(values)
    verdicts = [reference(v, event_type) for v in values]
    for got, expected in zip(fast, verdicts, strict=True):
        if got is not None:
            assert not isinstance(expected, str), f"accepted what decode_event refuses: {expected}"
            same_event(got, expected)
    return fast


BAD_RECORDS: dict[str, bytes | None] = {
    "none": None,
    "empty": b"",
    "not json": b"{not json",
    "not utf-8": b'{"a": "\xff"}',
    "nan": raw(prediction(0))[:-2] + b', "x": NaN}}',
    "a list": b"[1, 2]",
    "trailing data": raw(prediction(0)) + b" x",
    "two objects": raw(prediction(0)) + b"," + raw(prediction(1)),
    "no specversion": raw(prediction(0, specversion=DELETE)),
    "specversion 2": raw(prediction(0, specversion="2.0")),
    "specversion as a number": raw(prediction(0, specversion=1.0)),
    "no id": raw(prediction(0, id=DELETE)),
    "no time": raw(prediction(0, time=DELETE)),
    "another type": raw(prediction(0, type=FeedbackReceived.TYPE)),
    "unknown type": raw(prediction(0, type="mlcp.nothing.v9")),
    "no data": raw(prediction(0, data=DELETE)),
    "bad feature value": raw(prediction(0, **{"data.features": {"a": [1]}})),
    "infinite latency": raw(prediction(0)).replace(b'"latency_ms": 3.5', b'"latency_ms": 1e999'),
    "no prediction": raw(prediction(0, **{"data.prediction": None})),
    "bad version": raw(prediction(0, **{"data.version": "1.0"})),
    "too large": raw(prediction(0, **{"data.request_id": "x" * MAX_EVENT_BYTES})),
    # Unknown fields are skipped by msgspec, parsed by decode_event: depth is checked first.
    "nested too deep in an unknown field": raw(prediction(0, **{"data.x": _nested(65)})),
    "nested 20,000 levels": raw(prediction(0, dataschema="@D@")).replace(
        b'"@D@"', b"[" * 20_000 + b"1" + b"]" * 20_000
    ),
    "a huge array": raw(prediction(0, **{"data.features": [0] * 200_000})),
}


@pytest.mark.parametrize("name", sorted(BAD_RECORDS))
def test_a_bad_record_is_left_to_decode_event_and_the_rest_decoded(name: str, kind: str) -> None:
    good = [raw(prediction(i)) for i in range(3)]
    bad = BAD_RECORDS[name]
    assert isinstance(reference(bad, PREDICTION), str), "the case must be a contract error"
    fast = check([good[0], bad, good[1], good[2]], kind=kind)
    assert fast[1] is None
    assert all(event is not None for i, event in enumerate(fast) if i != 1)


def test_records_past_the_consumers_own_limits_are_left_to_decode_event(kind: str) -> None:
    values = [raw(prediction(0)), raw(prediction(1, **{"data.x": _nested(5)}))]
    shallow = raw(prediction(2, **{"data.x": _nested(1)}))
    limits = {"max_bytes": len(values[0]) + 100, "max_depth": 6}
    fast = (
        wire_decoder(PREDICTION, **limits) if kind == "wire" else BatchDecoder(PREDICTION, **limits)
    )
    assert fast is not None
    big = raw(prediction(3, **{"data.request_id": "x" * 200}))
    got = fast.decode([*values, shallow, big])
    assert got[0] is not None
    assert got[2] is not None
    assert got[1] is None, "nests 7 levels, over the consumer's 6"
    assert got[3] is None, "over the consumer's size limit"


def test_many_bad_records_in_one_batch(kind: str) -> None:
    values = [raw(prediction(i)) for i in range(5)] + list(BAD_RECORDS.values())
    fast = check(values, kind=kind)
    assert [event is not None for event in fast] == [True] * 5 + [False] * len(BAD_RECORDS)


def test_extensions_and_optional_attributes_as_decode_event() -> None:
    obj = prediction(0, correlationid="c-1", dataschema="s", Bad_Name="dropped", nested={"a": 1})
    (event,) = check([raw(obj)])
    assert event is not None
    assert event.extensions == {"dataschema": "s"}


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_every_event_type_round_trips_like_decode_event(data: st.DataObject) -> None:
    model = data.draw(st.sampled_from(sorted(STRATEGIES, key=lambda m: m.TYPE)))
    batch = data.draw(st.lists(events(model), min_size=1, max_size=4))
    fast = check([encode_event(e) for e in batch], model.TYPE)
    assert all(event is not None for event in fast)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_mutated_records_are_never_accepted_wrongly(data: st.DataObject) -> None:
    """Random byte edits of valid records: whatever a fast path accepts, decode_event
    decodes to the same event."""
    kind = data.draw(st.sampled_from(["pydantic", "wire"]))
    values: list[bytes | None] = []
    for i in range(data.draw(st.integers(1, 4))):
        record = bytearray(raw(prediction(i)))
        for _ in range(data.draw(st.integers(0, 3))):
            at = data.draw(st.integers(0, len(record) - 1))
            record[at] = data.draw(st.sampled_from(b'{}[]",:0-9.eE aznN\\'))
        values.append(bytes(record))
    check(values, kind=kind)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_the_wire_types_round_trip_through_the_wire_decoder(data: st.DataObject) -> None:
    model = data.draw(st.sampled_from([PredictionLogged, FeedbackReceived]))
    batch = data.draw(st.lists(events(model), min_size=1, max_size=4))
    fast = check([encode_event(e) for e in batch], model.TYPE, kind="wire")
    assert all(event is not None for event in fast)


def _text(obj: dict[str, Any], **replace: str) -> bytes:
    """The record as JSON with some values replaced by raw JSON text."""
    text = json.dumps(obj)
    for marker, value in replace.items():
        text = text.replace(json.dumps(marker), value)
    return text.encode()


# Records decode_event accepts that a fast path may leave to it (then ``adopt`` gives the
# handler the same event) or decode itself (then identically).
LAX_OR_RARE: dict[str, bytes] = {
    "7 fractional digits": raw(prediction(0, time="2026-01-01T00:00:00.1234567Z")),
    "an offset": raw(prediction(0, **{"data.ts": "2026-01-01T00:00:00+05:30"})),
    "a lowercase z": raw(prediction(0, **{"data.ts": "2026-01-01t00:00:00z"})),
    "minutes only": raw(prediction(0, **{"data.ts": "2026-01-01T00:00Z"})),
    "unix seconds": raw(prediction(0, **{"data.ts": 1_700_000_000})),
    "latency as a string": raw(prediction(0, **{"data.latency_ms": "3.5"})),
    "latency as an int": raw(prediction(0, **{"data.latency_ms": 3})),
    "error as 0": raw(prediction(0, **{"data.error": 0})),
    "error as a string": raw(prediction(0, **{"data.error": "no"})),
    "feature kinds": raw(
        prediction(0, **{"data.features": {"i": 7, "f": 7.0, "b": True, "s": "7", "n": None}})
    ),
    "a feature of 2**60": raw(prediction(0, **{"data.features": {"big": 2**60}})),
    "a feature of -(2**53 - 1)": raw(prediction(0, **{"data.features": {"x": -(2**53 - 1)}})),
    "a boolean prediction": raw(prediction(0, **{"data.prediction": False})),
    "a string prediction": raw(prediction(0, **{"data.prediction": "yes"})),
    "an error without prediction": raw(
        prediction(0, **{"data.prediction": None, "data.error": True})
    ),
    "extensions": raw(prediction(0, dataschema="s", Bad="x", nested={"a": 1})),
    "unknown data field": raw(prediction(0, **{"data.extra": {"deep": [1, 2]}})),
    "no optional attributes": raw(
        prediction(0, subject=DELETE, datacontenttype=DELETE, **{"data.alias": DELETE})
    ),
    "an alias": raw(prediction(0, **{"data.alias": "canary"})),
    "correlation and causation": raw(prediction(0, correlationid="c-1", causationid="e-2")),
    "duplicate key": _text(
        prediction(0, **{"data.request_id": "@R@"}), **{"@R@": '"a", "request_id": "b"'}
    ),
    "unicode feature name": raw(prediction(0, **{"data.features": {"年龄": 3.0}})),
    "feedback with a version": raw(
        {
            **prediction(0),
            "type": FEEDBACK,
            "data": {
                "model": "churn",
                "version": "2.0.0-rc.1",
                "request_id": "r1",
                "label": 1,
                "ts": "2026-01-01T00:00:00Z",
            },
        }
    ),
}

# Records decode_event refuses on rules a fast path must check beyond JSON types.
REFUSED: dict[str, bytes] = {
    "offset shifted before year 1": raw(prediction(0, **{"data.ts": "0001-01-01T00:00:00+01:00"})),
    "naive time": raw(prediction(0, time="2026-01-01T00:00:00")),
    "request id with a space": raw(prediction(0, **{"data.request_id": "a b"})),
    "empty request id": raw(prediction(0, **{"data.request_id": ""})),
    "model not a slug": raw(prediction(0, **{"data.model": "Churn Model"})),
    "version not SemVer": raw(prediction(0, **{"data.version": "v1.0.0"})),
    "alias not a slug": raw(prediction(0, **{"data.alias": "Prod!"})),
    "source with a space": raw(prediction(0, source="my source")),
    "empty subject": raw(prediction(0, subject="")),
    "empty id": raw(prediction(0, id="")),
    "id of 257 characters": raw(prediction(0, id="x" * 257)),
    "correlation id with a space": raw(prediction(0, correlationid="a b")),
    "probability 1.5": raw(prediction(0, **{"data.probability": 1.5})),
    "negative latency": raw(prediction(0, **{"data.latency_ms": -1})),
    "feature name with a control character": raw(prediction(0, **{"data.features": {"a\x01": 1}})),
    "feature name with a trailing space": raw(prediction(0, **{"data.features": {"a ": 1}})),
    "a feature string of 1025 characters": raw(
        prediction(0, **{"data.features": {"s": "x" * 1025}})
    ),
    "1001 features": raw(prediction(0, **{"data.features": {f"f{i}": 1.0 for i in range(1001)}})),
    "an infinite feature": _text(
        prediction(0, **{"data.features": {"x": "@X@"}}), **{"@X@": "1e999"}
    ),
    "a feature object": raw(prediction(0, **{"data.features": {"x": {"y": 1}}})),
    "specversion 1.0 as null data": raw(prediction(0, data=None)),
    "a lone surrogate": _text(prediction(0, **{"data.request_id": "@S@"}), **{"@S@": '"\\ud800"'}),
}


@pytest.mark.parametrize("name", sorted(LAX_OR_RARE))
def test_what_decode_event_accepts_reaches_the_handler_identically(name: str, kind: str) -> None:
    value = LAX_OR_RARE[name]
    event_type = json.loads(value)["type"]
    expected = reference(value, event_type)
    assert not isinstance(expected, str), f"the case must be valid: {expected}"
    dec = decoder(kind, event_type)
    (fast,) = check([value], event_type, kind=kind)
    same_event(fast if fast is not None else dec.adopt(expected), expected)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_decode_event_refuses_is_never_accepted(name: str, kind: str) -> None:
    value = REFUSED[name]
    assert isinstance(reference(value, PREDICTION), str), "the case must be a contract error"
    assert check([value, raw(prediction(1))], kind=kind)[0] is None


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_id_hints_are_the_envelope_ids_or_none(data: st.DataObject) -> None:
    model = data.draw(st.sampled_from([PredictionLogged, FeedbackReceived]))
    batch = data.draw(st.lists(events(model), min_size=1, max_size=4))
    hints = decoder("wire", model.TYPE).ids([encode_event(e) for e in batch])
    for hint, event in zip(hints, batch, strict=True):
        assert hint in (None, event.id)
        if event.id.isascii() and event.id.isprintable() and not set(event.id) & set('"\\ '):
            assert hint == event.id
    assert decoder("wire", PREDICTION).ids([None, b"", b"{}", b'{"id": 1}']) == [None] * 4


def test_the_wire_decoder_serves_only_the_high_volume_types() -> None:
    assert {t for t in EVENT_TYPES if wire_decoder(t) is not None} == set(WIRE_TYPES)


def test_the_decoder_knows_every_catalog_type() -> None:
    for event_type in EVENT_TYPES:
        assert BatchDecoder(event_type).decode([]) == []


def _record(offset: int, value: bytes, headers: list[tuple[str, bytes]]) -> Any:
    from aiokafka import ConsumerRecord

    return ConsumerRecord(
        topic="t",
        partition=0,
        offset=offset,
        timestamp=1000 + offset,
        timestamp_type=0,
        key=b"k",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value),
        headers=headers,
    )


async def test_the_batch_parser_keeps_the_records_and_skips_per_record_headers() -> None:
    from faststream.kafka.message import KafkaAckableMessage
    from faststream.kafka.parser import AioKafkaBatchParser, AioKafkaParser

    from mlcp.runtime.broker import batch_parser

    parser = AioKafkaBatchParser(msg_class=KafkaAckableMessage, regex=None)
    records = (
        _record(7, b"a", [("traceparent", b"00-1-2-01")]),
        _record(8, b"b", [("traceparent", b"00-3-4-01")]),
    )
    message = await batch_parser(records, parser.parse_batch)
    assert message.raw_message is records
    assert message.body == [b"a", b"b"]
    assert message.headers == {"traceparent": "00-1-2-01"}  # the first record's: one span
    assert message.batch_headers == []
    assert message.message_id == "7-8-1007"
    # FastStream's own parser for anything else (a single record, another parser).
    single = await batch_parser(records[0], AioKafkaParser(KafkaAckableMessage, None).parse_message)
    assert single.raw_message is records[0]


def test_collection_pauses_for_a_batch_and_resumes_after_the_last_one() -> None:
    import gc

    from mlcp.runtime.batch import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # a second batch consumer at the same time
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("a failing batch")
    assert gc.isenabled()
    gc.disable()  # turned off by someone else: left off
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
