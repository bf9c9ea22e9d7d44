"""The CLI's conventions for scripts: ``mlcp --version`` and ``mlcp events tail --json``."""

from __future__ import annotations

import base64
import json
from importlib.metadata import version
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from mlcp.cli.main import app
from mlcp.cli.tail import json_line
from mlcp.contracts import DataArrived, encode_event, new_event

pytestmark = pytest.mark.unit


def test_version_names_the_cli_and_the_wire_libraries() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"mlcp {version('mlcp-cli')} (contracts {version('mlcp-contracts')}, "
        f"runtime {version('mlcp-runtime')})"
    )


def _record(value: bytes, topic: str) -> SimpleNamespace:
    return SimpleNamespace(
        topic=topic, partition=2, offset=41, timestamp=1_700_000_000_000, key=b"churn", value=value
    )


def test_tail_json_line_carries_the_whole_event_and_its_place_on_kafka() -> None:
    event = new_event(
        DataArrived(
            dataset="churn", batch_id="b1", uri="file:///b1.csv", rows=5, sha256="a" * 64,
            completeness=1.0,
        ),
        source="pipeline/test",
        correlationid="c-1",
    )  # fmt: skip
    line = json_line(_record(encode_event(event), f"p.{DataArrived.TYPE}"), "p.")
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["topic"] == f"p.{DataArrived.TYPE}"
    assert (entry["partition"], entry["offset"], entry["key"]) == (2, 41, "churn")
    assert entry["timestamp_ms"] == 1_700_000_000_000
    assert entry["event"]["id"] == event.id
    assert entry["event"]["correlationid"] == "c-1"
    assert entry["event"]["data"]["batch_id"] == "b1"
    assert "invalid" not in entry


def test_tail_json_line_says_why_a_record_is_not_an_event_and_keeps_its_bytes() -> None:
    entry = json.loads(json_line(_record(b"{not json", DataArrived.TYPE), ""))
    assert entry["invalid"] == "invalid_json"
    assert base64.b64decode(entry["value_base64"]) == b"{not json"
    assert "event" not in entry
