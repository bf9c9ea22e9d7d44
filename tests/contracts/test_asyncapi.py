"""docs/asyncapi.yaml: generated from the catalog, the JSON Schemas and the bus policy, valid
AsyncAPI 3.0, and up to date (``make schemas`` regenerates it after an intended change)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from mlcp.contracts import ALL_TOPICS, BINARY_TOPICS, model_for
from mlcp.policy.acl import load_policy
from mlcp.runtime.asyncapi import build_document, render

pytestmark = pytest.mark.contracts

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs/asyncapi.yaml"
SPEC = Path(__file__).with_name("asyncapi") / "asyncapi-3.0.0.schema.json"


@pytest.fixture(scope="module")
def validator() -> Any:
    return jsonschema_rs.validator_for(json.loads(SPEC.read_text()))


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document()


def test_the_checked_in_document_is_the_generated_one(document: dict[str, Any]) -> None:
    assert DOCUMENT.read_text() == render(document), (
        "docs/asyncapi.yaml is out of date: run `make schemas` and review the diff"
    )


def test_it_is_valid_asyncapi_3(validator: Any, document: dict[str, Any]) -> None:
    errors = [
        f"{list(e.instance_path)}: {e.message[:200]}" for e in validator.iter_errors(document)
    ]
    assert not errors, errors
    assert document["asyncapi"] == "3.0.0"


def test_the_validator_catches_a_broken_document(validator: Any, document: dict[str, Any]) -> None:
    broken = copy.deepcopy(document)
    first = next(iter(broken["operations"].values()))
    first["action"] = "publish"  # AsyncAPI 2's word; 3.0 has send and receive
    assert not validator.is_valid(broken)


def test_every_topic_is_a_channel_whose_payload_is_its_json_schema(
    document: dict[str, Any],
) -> None:
    assert list(document["channels"]) == list(ALL_TOPICS)
    for topic in BINARY_TOPICS:
        message = document["components"]["messages"]["PredictionBatchLogged"]
        assert document["channels"][topic]["address"] == topic
        assert message["contentType"] == "application/vnd.apache.arrow.stream"
    for topic, channel in document["channels"].items():
        if topic in BINARY_TOPICS:
            continue
        model = model_for(topic)
        assert model is not None
        assert channel["address"] == topic
        message = document["components"]["messages"][model.__name__]
        schema = ROOT / "docs" / message["payload"]["$ref"]
        assert schema.is_file(), f"{topic}: {schema} missing"
        assert json.loads(schema.read_text())["x-mlcp-topic"] == topic
        assert message["contentType"] == "application/cloudevents+json"


def test_operations_follow_the_bus_policy(document: dict[str, Any]) -> None:
    policy = load_policy()
    operations = document["operations"]
    for topic, access in policy.topics.items():
        model = model_for(topic)
        name = model.__name__ if model is not None else "PredictionBatchLogged"
        on_topic = {
            op_id: op
            for op_id, op in operations.items()
            if op["channel"]["$ref"] == f"#/channels/{topic}"
        }
        senders = {i.split(".")[0] for i, op in on_topic.items() if op["action"] == "send"}
        assert senders == {policy.service_of(p) or p for p in access.write}, topic
        groups = {
            op["bindings"]["kafka"]["groupId"]["enum"][0]
            for op in on_topic.values()
            if op["action"] == "receive" and "bindings" in op
        }
        assert groups == {f"mlcp-{policy.service_of(p)}" for p in access.read}, topic
        assert all(
            op["messages"][0]["$ref"].endswith(f"/messages/{name}") for op in on_topic.values()
        )


def test_servers_require_scram(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["scramSha512"]
    assert scheme["type"] == "scramSha512"
    for server in document["servers"].values():
        assert server["security"] == [{"$ref": "#/components/securitySchemes/scramSha512"}]
