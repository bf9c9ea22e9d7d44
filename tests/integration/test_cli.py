"""The operator CLI: `mlcp emit data-arrived` publishes a valid, acknowledged DataArrived with
facts computed from the file; bad input is refused clearly; `events tail` renders the bus."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from mlcp.cli.tail import render
from mlcp.contracts import DataArrived, decode_event, encode_event, new_event
from tests.conftest import Infra
from tests.integration.kafka_tools import read_all

pytestmark = pytest.mark.integration


def cli_env(infra: Infra, prefix: str) -> dict[str, str]:
    return infra.env("pipeline", prefix=prefix)


async def test_emit_data_arrived_from_a_csv(
    infra: Infra, unique: str, spawn: Any, tmp_path: Path
) -> None:
    prefix = f"t{unique}."
    topic = f"{prefix}{DataArrived.TYPE}"
    batch = tmp_path / "batch-1.csv"
    batch.write_text("a,b,label\n1,2,0\n3,,1\n5,6,1\n4,4,0\n")
    proc = spawn(
        [
            "-m",
            "mlcp.cli",
            "emit",
            "data-arrived",
            "--dataset",
            "churn-events",
            "--uri",
            str(batch),
            "--batch-id",
            "b-1",
            "--correlation-id",
            "life-1",
        ],
        cli_env(infra, prefix),
        "cli",
    )
    assert await proc.wait_exit() == 0, proc.output()
    [record] = await read_all(infra.admin, topic)
    event = decode_event(record.value, expected_type=DataArrived.TYPE)
    assert event.correlationid == "life-1"
    assert record.key == b"churn-events"
    data: DataArrived = event.data
    assert (data.dataset, data.batch_id, data.rows) == ("churn-events", "b-1", 4)
    assert data.sha256 == hashlib.sha256(batch.read_bytes()).hexdigest()
    assert data.completeness == pytest.approx(11 / 12)
    assert data.uri == batch.resolve().as_uri()
    assert f"id={event.id}" in proc.output()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "d", "--uri", "/nonexistent/x.csv"], "is not a readable file"),
        (["--dataset", "d", "--uri", "s3://bucket/x.parquet"], "needs --rows, --sha256"),
        (
            [
                "--dataset",
                "Bad Name",
                "--uri",
                "s3://b/x",
                "--rows",
                "5",
                "--sha256",
                "a" * 64,
                "--completeness",
                "1",
            ],
            "invalid event",
        ),
        (
            [
                "--dataset",
                "d",
                "--uri",
                "s3://b/x",
                "--rows",
                "5",
                "--sha256",
                "xyz",
                "--completeness",
                "1",
            ],
            "sha256",
        ),
    ],
)
async def test_emit_refuses_bad_input_clearly(
    infra: Infra, unique: str, spawn: Any, args: list[str], message: str
) -> None:
    proc = spawn(
        ["-m", "mlcp.cli", "emit", "data-arrived", *args], cli_env(infra, f"t{unique}."), "cli"
    )
    assert await proc.wait_exit() == 2, proc.output()
    assert message in proc.output()
    assert "Traceback" not in proc.output()


def test_tail_renders_valid_and_invalid_records() -> None:
    event = new_event(
        DataArrived(
            dataset="churn-events",
            batch_id="b9",
            uri="file:///x.csv",
            rows=7,
            sha256="b" * 64,
            completeness=1.0,
        ),
        source="mlcp/test",
    )
    line = render(encode_event(event), f"p.{DataArrived.TYPE}", "p.")
    assert "data.arrived" in line
    assert "churn-events" in line
    assert "rows=7" in line
    assert "invalid record: invalid_json" in render(b"{", f"p.{DataArrived.TYPE}", "p.")
