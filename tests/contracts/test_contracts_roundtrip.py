"""Property tests: every event of the catalog survives encode → decode unchanged."""

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlcp.contracts import EVENT_TYPES, CloudEvent, decode_event, encode_event
from tests.contracts.contract_strategies import STRATEGIES, events

pytestmark = pytest.mark.contracts

PROPERTY = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_every_catalog_type_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(EVENT_TYPES.values())


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
@PROPERTY
@given(data=st.data())
def test_encode_decode_round_trip(event_type: str, data: st.DataObject) -> None:
    model = EVENT_TYPES[event_type]
    event: CloudEvent[Any] = data.draw(events(model))

    raw = encode_event(event)
    decoded = decode_event(raw, expected_type=event_type)

    assert decoded == event
    assert type(decoded.data) is model
    assert decoded.type == event_type
    assert encode_event(decoded) == raw  # byte-stable
    # The data model alone also round-trips through pydantic's JSON mode.
    assert model.model_validate_json(event.data.model_dump_json()) == event.data
