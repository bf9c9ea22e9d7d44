"""Pathological records get a reason, not an exception and not minutes of CPU: nesting depth
(``mlcp.contracts.nesting``), size and huge containers of invalid items in ``decode_event``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcp.contracts import (
    MAX_EVENT_BYTES,
    MAX_JSON_DEPTH,
    InvalidData,
    InvalidJson,
    NestingTooDeep,
    PayloadTooLarge,
    RunFinished,
    TrainingRequested,
    decode_event,
    describe_errors,
    nesting_exceeds,
)
from mlcp.contracts.codec import MAX_DESCRIBED_ERRORS
from tests.contracts.contract_examples import EXAMPLES

pytestmark = pytest.mark.contracts


def depth(value: Any) -> int:
    """The nesting depth of a parsed JSON value (0 for a scalar)."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


# Strings full of what a byte scan could mistake for structure: brackets, quotes, backslashes.
tricky_text = st.text(alphabet='[]{}"\\ab:,\u00e9', max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(json_values, st.integers(0, 12))
def test_nesting_is_measured_exactly_whatever_the_strings_hold(value: Any, limit: int) -> None:
    raw = json.dumps(value, ensure_ascii=False).encode()
    assert nesting_exceeds(raw, limit) == (depth(value) > limit)


@pytest.mark.parametrize(
    ("raw", "deeper_than_64"),
    [
        (b"[" * 20_000 + b"]" * 20_000, True),
        (b'{"a":' * 20_000 + b"1" + b"}" * 20_000, True),
        (b"[" * 20_000, True),  # unbalanced: judged by its openers
        (b"[" + b"[]," * 20_000 + b"[]]", False),  # many brackets, two levels
        (b'["' + b"[" * 20_000 + b'"]', False),  # brackets inside a string
        (b'["' + b'\\"' * 20_000 + b"[" * 100 + b'"]', False),  # escaped quotes inside it
        (b'"' + b'\\"' * 100_000, False),  # an unterminated string of escaped quotes
    ],
)
def test_pathological_texts(raw: bytes, deeper_than_64: bool) -> None:
    assert nesting_exceeds(raw, 64) is deeper_than_64


def test_every_event_of_the_catalog_nests_well_under_the_default_limit() -> None:
    for event_type, data in EXAMPLES.items():
        envelope = {"specversion": "1.0", "type": event_type, "data": data}
        assert depth(envelope) <= 8, event_type
    assert MAX_JSON_DEPTH >= 8 * 8


def envelope(event_type: str, data: Any) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": "e-1",
            "source": "mlcp/test",
            "type": event_type,
            "time": "2025-03-01T12:00:00Z",
            "data": data,
        }
    ).encode()


def test_a_deep_record_is_refused_before_it_is_parsed() -> None:
    deep = envelope("mlcp.data.arrived.v1", {**EXAMPLES["mlcp.data.arrived.v1"], "x": 1})
    deep = deep.replace(b'"x": 1', b'"x": ' + b"[" * 20_000 + b"]" * 20_000)
    with pytest.raises(NestingTooDeep, match="deeper than 64 levels") as caught:
        decode_event(deep)
    assert caught.value.reason == "too_deep"
    # A lower limit of the consumer's own.
    shallow = envelope("mlcp.data.arrived.v1", {**EXAMPLES["mlcp.data.arrived.v1"], "x": [[1]]})
    decode_event(shallow)
    with pytest.raises(NestingTooDeep, match="deeper than 3 levels"):
        decode_event(shallow, max_depth=3)


def test_a_parser_recursion_error_is_a_contract_error() -> None:
    # With the depth check out of the way, the stdlib parser itself gives up.
    with pytest.raises(NestingTooDeep, match="too deep to parse"):
        decode_event(b"[" * 100_000 + b"]" * 100_000, max_depth=10**9)


def test_the_size_limit_can_be_lowered() -> None:
    raw = envelope("mlcp.data.arrived.v1", EXAMPLES["mlcp.data.arrived.v1"])
    decode_event(raw)
    with pytest.raises(PayloadTooLarge, match=f"over the {len(raw) - 1} limit"):
        decode_event(raw, max_bytes=len(raw) - 1)
    with pytest.raises(PayloadTooLarge):
        decode_event(b" " * (MAX_EVENT_BYTES + 1))


def test_invalid_utf8_is_invalid_json() -> None:
    raw = envelope("mlcp.data.arrived.v1", EXAMPLES["mlcp.data.arrived.v1"]).replace(
        b"churn-events", b"churn-\xff\xfe"
    )
    with pytest.raises(InvalidJson, match="not UTF-8"):
        decode_event(raw)


def test_a_huge_sequence_of_invalid_items_stops_at_the_first() -> None:
    # Every sequence of the contracts fails fast: 1 error, not 200,000 (validating and listing
    # them all took seconds; the old deduplication of the list was quadratic: 9 minutes for
    # 300,000 items).
    data = {**EXAMPLES[TrainingRequested.TYPE], "trigger_event_ids": [0] * 200_000}
    with pytest.raises(InvalidData) as caught:
        decode_event(envelope(TrainingRequested.TYPE, data))
    assert str(caught.value) == (
        "invalid data of mlcp.training.requested.v1: "
        "data.trigger_event_ids.0: Input should be a valid string (got 0)"
    )


def test_a_huge_mapping_of_invalid_values_is_counted_not_listed() -> None:
    # Mappings cannot fail fast in pydantic: their errors are counted past MAX_DESCRIBED_ERRORS.
    items = 60_000
    data = {**EXAMPLES[RunFinished.TYPE], "metrics": {f"m{i}": "x" for i in range(items)}}
    with pytest.raises(InvalidData) as caught:
        decode_event(envelope(RunFinished.TYPE, data))
    message = str(caught.value)
    assert f"{items} errors, too many to list" in message
    assert f"data.metrics holds {items} items" in message
    assert caught.value.reason == "invalid_data"
    assert items > MAX_DESCRIBED_ERRORS


def test_describe_errors_names_each_failing_field() -> None:
    from pydantic import BaseModel, ValidationError

    class Pair(BaseModel):
        a: int
        b: int

    with pytest.raises(ValidationError) as caught:
        Pair.model_validate({"a": "x"})
    assert describe_errors(caught.value) == (
        "a: Input should be a valid integer, unable to parse string as an integer (got 'x'); "
        "b: Field required"
    )
