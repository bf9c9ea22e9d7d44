"""The catalog: topic names, the type → model map, keys and documentation."""

import inspect
import re

import pytest

import mlcp.contracts as contracts
from mlcp.contracts import ALL_TOPICS, EVENT_TYPES, EventData, dlq_topic, topic_config
from mlcp.contracts.catalog import model_for

pytestmark = pytest.mark.contracts

DESIGN_TOPICS = [
    "mlcp.data.arrived.v1",
    "mlcp.training.requested.v1",
    "mlcp.run.started.v1",
    "mlcp.run.finished.v1",
    "mlcp.run.failed.v1",
    "mlcp.model.registered.v1",
    "mlcp.gate.check_passed.v1",
    "mlcp.gate.failed.v1",
    "mlcp.gate.passed.v1",
    "mlcp.approval.requested.v1",
    "mlcp.approval.granted.v1",
    "mlcp.approval.rejected.v1",
    "mlcp.check.reported.v1",
    "mlcp.model.promoted.v1",
    "mlcp.model.rolled_back.v1",
    "mlcp.prediction.logged.v1",
    "mlcp.feedback.received.v1",
    "mlcp.drift.detected.v1",
    "mlcp.model.degraded.v1",
    "mlcp.canary.healthy.v1",
    # Not in the lifecycle: the signed head of the registry's audit chain.
    "mlcp.audit.checkpointed.v1",
]
BINARY_TOPICS = ["mlcp.prediction.batch_logged.v1"]
KEY_FIELDS = {"mlcp.data.arrived.v1": "dataset", "mlcp.audit.checkpointed.v1": "chain"}


def test_topics_are_the_design_catalog() -> None:
    assert list(ALL_TOPICS) == DESIGN_TOPICS + BINARY_TOPICS
    assert list(EVENT_TYPES) == DESIGN_TOPICS


@pytest.mark.parametrize(("event_type", "model"), list(EVENT_TYPES.items()))
def test_each_model_declares_its_type_and_key(event_type: str, model: type[EventData]) -> None:
    assert event_type == model.TYPE
    assert model_for(event_type) is model
    assert model.KEY_FIELD in model.model_fields
    assert KEY_FIELDS.get(event_type, "model") == model.KEY_FIELD
    assert getattr(contracts, model.__name__) is model  # exported by name


@pytest.mark.parametrize("model", list(EVENT_TYPES.values()))
def test_each_model_is_documented_and_frozen(model: type[EventData]) -> None:
    doc = inspect.getdoc(model) or ""
    assert "Emitted by" in doc, f"{model.__name__} docstring must say who emits it"
    assert model.model_config.get("frozen") is True
    assert model.model_config.get("extra") == "ignore"


def test_topic_names_are_well_formed() -> None:
    for topic in ALL_TOPICS:
        assert re.fullmatch(r"mlcp(\.[a-z_]+)+\.v1", topic), topic


def test_topic_configs() -> None:
    retained = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
    assert topic_config("mlcp.audit.checkpointed.v1") == retained
    assert topic_config("t42.mlcp.audit.checkpointed.v1") == retained  # behind a topic prefix
    assert topic_config("mlcp.model.promoted.v1") == {}


def test_dlq_topic() -> None:
    assert dlq_topic("mlcp.run.finished.v1") == "mlcp.run.finished.v1.dlq"


def test_model_for_unknown_type() -> None:
    assert model_for("mlcp.run.finished.v9") is None


def test_public_api_names() -> None:
    for name in [
        "CloudEvent",
        "new_event",
        "encode_event",
        "decode_event",
        "ContractError",
        "InvalidJson",
        "InvalidEnvelope",
        "UnknownEventType",
        "TypeMismatch",
        "InvalidData",
        "PayloadTooLarge",
        "MAX_EVENT_BYTES",
        "EVENT_TYPES",
        "ALL_TOPICS",
        "dlq_topic",
        "json_schemas",
    ]:
        assert name in contracts.__all__, name
        assert hasattr(contracts, name), name
