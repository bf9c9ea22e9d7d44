"""The batch decoder of mlcp.runtime.batch accepts exactly what ``decode_event`` accepts; the
batch parser of mlcp.runtime.broker hands the records over without per-record work.

Its contract: for every record, either the same event as ``decode_event`` or None (then the
consumer asks ``decode_event``, which raises the ContractError the dead letter carries). It must
never accept a record ``decode_event`` refuses, and a bad record must not stop the others of
its batch from taking the fast path.
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
from mlcp.runtime.batch import BatchDecoder
from tests.contracts.contract_strategies import STRATEGIES, events

pytestmark = pytest.mark.unit

PREDICTION = PredictionLogged.TYPE


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


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def reference(value: bytes | None, event_type: str) -> Any:
    """decode_event's verdict: the event, or the ContractError's reason."""
    try:
        return decode_event(value or b"", expected_type=event_type)
    except ContractError as exc:
        return exc.reason


def check(values: list[bytes | None], event_type: str = PREDICTION) -> list[Any]:
    fast = BatchDecoder(event_type).decode(values)
    assert len(fast) == len(values)
    verdicts = [reference(v, event_type) for v in values]
    for got, expected in zip(fast, verdicts, strict=True):
        if got is not None:
            assert got == expected, "the fast path accepted what decode_event decodes otherwise"
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
}


@pytest.mark.parametrize("name", sorted(BAD_RECORDS))
def test_a_bad_record_is_left_to_decode_event_and_the_rest_decoded(name: str) -> None:
    good = [raw(prediction(i)) for i in range(3)]
    bad = BAD_RECORDS[name]
    assert isinstance(reference(bad, PREDICTION), str), "the case must be a contract error"
    fast = check([good[0], bad, good[1], good[2]])
    assert fast[1] is None
    assert all(event is not None for i, event in enumerate(fast) if i != 1)


def test_many_bad_records_in_one_batch() -> None:
    values = [raw(prediction(i)) for i in range(5)] + list(BAD_RECORDS.values())
    fast = check(values)
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
    """Random byte edits of valid records: whatever the fast path accepts, decode_event
    decodes to the same event."""
    values: list[bytes | None] = []
    for i in range(data.draw(st.integers(1, 4))):
        record = bytearray(raw(prediction(i)))
        for _ in range(data.draw(st.integers(0, 3))):
            at = data.draw(st.integers(0, len(record) - 1))
            record[at] = data.draw(st.sampled_from(b'{}[]",:0-9.eE aznN\\'))
        values.append(bytes(record))
    check(values)


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
