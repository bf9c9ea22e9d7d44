"""One behaviour for events about a model missing from the platform config: dead-lettered at
once with reason ``unknown_model`` (mlcp.runtime.refusals), never retried."""

from __future__ import annotations

from typing import Any

import pytest

from mlcp.runtime.consumer import Outcome, Refused
from mlcp.runtime.refusals import UNKNOWN_MODEL, UnknownModel, configured_model
from tests.builders import model_entry, platform_config
from tests.unit.test_runtime_poison import (
    arrived,
    batch_consumer,
    record,
    run_without_infrastructure,
)

pytestmark = pytest.mark.unit


def test_a_configured_model_is_returned() -> None:
    config = platform_config({"churn": model_entry(label="left")})
    assert configured_model(config, "churn", "evt-1").label == "left"


def test_an_unknown_model_is_a_refusal_naming_the_event_and_the_known_models() -> None:
    config = platform_config({"churn": model_entry(), "fraud": model_entry(dataset="tx")})
    with pytest.raises(UnknownModel) as raised:
        configured_model(config, "ghost", "evt-1")
    refusal = raised.value
    assert isinstance(refusal, Refused)
    assert refusal.reason == UNKNOWN_MODEL == "unknown_model"
    assert refusal.model == "ghost"
    assert list(refusal.errors) == ["evt-1"]
    assert "'ghost' is not configured" in refusal.errors["evt-1"]
    assert "churn, fraud" in refusal.errors["evt-1"]


async def test_the_consumer_dead_letters_unknown_models_at_once_and_applies_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = platform_config()  # only "churn"
    consumer = batch_consumer()
    records = [record(offset, arrived(offset)) for offset in range(0, 60, 10)]
    ghosts = {"b10", "b40"}  # these events name a model nobody configured
    applied: list[str] = []

    async def apply_batch(batch: list[Any], event_type: str, handler: Any) -> int:
        for event in batch:
            model = "ghost" if event.data.batch_id in ghosts else "churn"
            configured_model(config, model, event.id)
        applied.extend(event.data.batch_id for event in batch)
        return len(batch)

    letters = run_without_infrastructure(monkeypatch, consumer, apply_batch)
    assert await consumer.process_batch(records) is Outcome.APPLIED

    assert sorted(applied) == ["b0", "b20", "b30", "b50"]
    got = sorted((r.offset, reason, attempts) for r, reason, _, attempts in letters)
    assert got == [(10, UNKNOWN_MODEL, 1), (40, UNKNOWN_MODEL, 1)], "no retries"
