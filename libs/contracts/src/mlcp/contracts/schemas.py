"""JSON Schemas (draft 2020-12) of every event: the envelope with its data, one per type.

``python -m mlcp.contracts.schemas --write DIR`` writes ``DIR/<type>.json``;
``--check DIR`` exits 1 when the files there differ from the code.
"""

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

from mlcp.contracts.catalog import EVENT_TYPES
from mlcp.contracts.envelope import envelope_of

DIALECT = "https://json-schema.org/draft/2020-12/schema"
WIRE_REQUIRED = ("specversion", "id", "source", "type", "time", "data")
"""Attributes every record must carry (the envelope only defaults them for new events)."""


def event_schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema of one event type, as consumers validate it."""
    model = EVENT_TYPES[event_type]
    schema = envelope_of(model).model_json_schema(mode="validation")
    properties = schema["properties"]
    properties["type"] = {
        "const": event_type,
        "type": "string",
        "description": "Event type, also the Kafka topic.",
    }
    properties["specversion"].pop("default", None)
    schema["required"] = list(WIRE_REQUIRED)
    return {
        "$schema": DIALECT,
        "$id": f"{event_type}.json",
        **schema,
        "title": f"{model.__name__} ({event_type})",
        "description": inspect.cleandoc(model.__doc__ or ""),
        "x-mlcp-topic": event_type,
        "x-mlcp-key": model.KEY_FIELD,
    }


def json_schemas() -> dict[str, dict[str, Any]]:
    """Event type → its JSON Schema, for every type in the catalog."""
    return {event_type: event_schema(event_type) for event_type in EVENT_TYPES}


def render(schema: dict[str, Any]) -> str:
    """Stable text of a schema: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    """Write ``<type>.json`` for every event type into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for event_type, schema in json_schemas().items():
        path = directory / f"{event_type}.json"
        path.write_text(render(schema), encoding="utf-8")
        paths.append(path)
    return paths


def stale_schemas(directory: Path) -> list[str]:
    """File names in ``directory`` that are missing, outdated or not in the catalog."""
    expected = {f"{t}.json": render(s) for t, s in json_schemas().items()}
    present = {p.name for p in directory.glob("*.json")} if directory.is_dir() else set()
    stale = sorted(present - set(expected))
    for name, text in expected.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m mlcp.contracts.schemas", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, metavar="DIR", help="write the schemas into DIR")
    group.add_argument("--check", type=Path, metavar="DIR", help="fail if DIR is out of date")
    args = parser.parse_args(argv)
    if args.write is not None:
        for path in write_schemas(args.write):
            print(path)
        return 0
    stale = stale_schemas(args.check)
    for name in stale:
        print(f"out of date: {args.check / name}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
