"""The AsyncAPI 3.0 document of the bus, generated from what the code already says.

Channels are the catalog's topics (``mlcp.contracts``), each message's payload is the event's
generated JSON Schema (``docs/schemas/<type>.json``, snapshot-tested), and who sends and who
receives on each channel comes from the bus policy (``acls.yaml``): the one writer of a topic
gets a ``send`` operation, each service reading it in its own consumer group a ``receive``
operation with that group, each principal reading without a group one without. The servers
name the listeners of the dev stack and their security scheme (SASL/SCRAM-SHA-512).

FastStream can write an AsyncAPI document too, but not this one: the services' handlers take
raw bytes (the runtime decodes and validates the CloudEvent itself) and the outbox publishes
outside FastStream, so its generator sees no payloads and no publishers.

``python -m mlcp.runtime.asyncapi --write docs/asyncapi.yaml`` writes it (``make schemas``);
``--check PATH`` exits 1 when the file differs from the code.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from mlcp.contracts import BINARY_TOPICS, JSON_TOPICS, dlq_topic, model_for
from mlcp.policy.acl import BusPolicy, group_id, load_policy

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
CLOUDEVENTS_JSON = "application/cloudevents+json"
SECURITY = "scramSha512"


def _summary(doc: str | None) -> str:
    text = inspect.cleandoc(doc or "")
    return text.split("\n\n", 1)[0].replace("\n", " ")


def _who(policy: BusPolicy, principal: str) -> str:
    service = policy.service_of(principal)
    if service is not None:
        return service
    return principal


BATCH_MESSAGE = "PredictionBatchLogged"
ARROW_STREAM = "application/vnd.apache.arrow.stream"


def _binary_message(event_type: str) -> dict[str, Any]:
    """A binary-mode CloudEvent: attributes in ``ce_`` headers, the body one Arrow IPC stream."""
    return {
        "name": BATCH_MESSAGE,
        "title": f"{BATCH_MESSAGE} ({event_type})",
        "summary": (
            "Many predictions of one model as one Arrow IPC stream (CloudEvents binary mode; "
            "columns and limits in docs/serving.md)."
        ),
        "contentType": ARROW_STREAM,
        "payload": {"type": "string", "format": "binary"},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The CloudEvents subject: the model."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _message(event_type: str) -> dict[str, Any]:
    model = model_for(event_type)
    assert model is not None
    return {
        "name": model.__name__,
        "title": f"{model.__name__} ({event_type})",
        "summary": _summary(model.__doc__),
        "contentType": CLOUDEVENTS_JSON,
        "correlationId": {"$ref": "#/components/correlationIds/lifecycle"},
        "headers": {"$ref": "#/components/schemas/StructuredModeHeaders"},
        # The event's JSON Schema, generated from the contract and snapshot-tested.
        "payload": {"$ref": f"schemas/{event_type}.json"},
        "bindings": {
            "kafka": {
                "key": {
                    "type": "string",
                    "description": f"The CloudEvents subject: the event's `{model.KEY_FIELD}`.",
                },
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _channel(policy: BusPolicy, event_type: str, name: str) -> dict[str, Any]:
    access = policy.topics[event_type]
    writers = ", ".join(_who(policy, p) for p in access.write)
    return {
        "address": event_type,
        "title": event_type,
        "description": (
            f"Written only by {writers} (Kafka ACLs). Each record is one CloudEvent in "
            "structured JSON mode; its `type` is this topic, its `subject` the key. Records a "
            f"consumer cannot apply go to `{dlq_topic(event_type)}` with the reason."
        ),
        "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        "bindings": {
            "kafka": {"topic": event_type, "bindingVersion": KAFKA_BINDING_VERSION},
        },
    }


def _operations(policy: BusPolicy, event_type: str, name: str) -> dict[str, Any]:
    access = policy.topics[event_type]
    channel = {"$ref": f"#/channels/{event_type}"}
    message = [{"$ref": f"#/channels/{event_type}/messages/{name}"}]
    operations: dict[str, Any] = {}
    for writer in access.write:
        who = _who(policy, writer)
        operations[f"{who}.send.{name}"] = {
            "action": "send",
            "channel": channel,
            "title": f"{who} sends {name}",
            "summary": f"Principal `{writer}` (the topic's only writer) publishes {name}.",
            "messages": message,
        }
    for reader in access.read:
        service = _who(policy, reader)
        group = group_id("", service)
        operations[f"{service}.receive.{name}"] = {
            "action": "receive",
            "channel": channel,
            "title": f"{service} receives {name}",
            "summary": (
                f"Principal `{reader}` consumes in group `{group}` (behind MLCP_TOPIC_PREFIX) "
                f"and accepts only the sources the topic allows."
            ),
            "messages": message,
            "bindings": {
                "kafka": {
                    "groupId": {"type": "string", "enum": [group]},
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
    for reader in access.read_without_group:
        who = _who(policy, reader)
        operations[f"{who}.receive.{name}"] = {
            "action": "receive",
            "channel": channel,
            "title": f"{who} receives {name}",
            "summary": f"Principal `{reader}` reads assigned partitions, without a group.",
            "messages": message,
        }
    return operations


def build_document(policy: BusPolicy | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every topic of the catalog under ``policy``."""
    policy = policy or load_policy()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event_type in JSON_TOPICS:
        model = model_for(event_type)
        assert model is not None
        name = model.__name__
        channels[event_type] = _channel(policy, event_type, name)
        operations |= _operations(policy, event_type, name)
        messages[name] = _message(event_type)
    for event_type in BINARY_TOPICS:
        channels[event_type] = _channel(policy, event_type, BATCH_MESSAGE)
        operations |= _operations(policy, event_type, BATCH_MESSAGE)
        messages[BATCH_MESSAGE] = _binary_message(event_type)
    security = [{"$ref": f"#/components/securitySchemes/{SECURITY}"}]
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:mlcp:bus",
        "info": {
            "title": "mlcp event bus",
            "version": version("mlcp-contracts"),
            "description": (
                "The events through which mlcp's five services (registry, trainer, gatekeeper, "
                "monitor, notifier), data pipelines and inference services talk: one Kafka "
                "topic per CloudEvents type, keyed by subject. Generated by "
                "`python -m mlcp.runtime.asyncapi` from the event catalog (mlcp.contracts), "
                "the JSON Schemas in docs/schemas and the bus policy "
                "(mlcp/policy/acls.yaml); do not edit by hand."
            ),
        },
        "defaultContentType": CLOUDEVENTS_JSON,
        "servers": {
            "dev": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": (
                    "The dev stack's SASL_PLAINTEXT listener (`mlcp dev up`); elsewhere "
                    "MLCP_KAFKA_BOOTSTRAP."
                ),
                "security": security,
            },
            "dev-tls": {
                "host": "127.0.0.1:9094",
                "protocol": "kafka-secure",
                "description": "The dev stack's SASL_SSL listener (its CA: `mlcp-dev env --tls`).",
                "security": security,
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {
                "StructuredModeHeaders": {
                    "type": "object",
                    "description": "Kafka record headers of a structured-mode CloudEvent.",
                    "properties": {
                        "content-type": {"type": "string", "const": CLOUDEVENTS_JSON},
                        "traceparent": {
                            "type": "string",
                            "description": "W3C trace context of the span that sent it.",
                        },
                        "tracestate": {"type": "string"},
                    },
                }
            },
            "correlationIds": {
                "lifecycle": {
                    "description": "One id follows a model's lifecycle across services.",
                    "location": "$message.payload#/correlationid",
                }
            },
            "securitySchemes": {
                SECURITY: {
                    "type": "scramSha512",
                    "description": (
                        "SASL/SCRAM-SHA-512, one principal per service (`svc-<service>`), "
                        "`pipeline`, `inference`, `operator`, `admin`; deny-by-default ACLs "
                        "from acls.yaml (docs/security.md)."
                    ),
                }
            },
        },
    }


def render(document: dict[str, Any]) -> str:
    """Stable YAML text of the document."""
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m mlcp.runtime.asyncapi", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, metavar="PATH", help="write the document")
    group.add_argument("--check", type=Path, metavar="PATH", help="fail if PATH is out of date")
    args = parser.parse_args(argv)
    text = render(build_document())
    if args.write is not None:
        args.write.write_text(text, encoding="utf-8")
        print(args.write)
        return 0
    if not args.check.is_file() or args.check.read_text(encoding="utf-8") != text:
        print(f"out of date: {args.check} (make schemas)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
