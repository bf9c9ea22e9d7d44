"""mlcp.prediction.batch_logged.v1: an Arrow stream in a binary-mode CloudEvent, checked whole."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from mlcp.client.logger import columns
from mlcp.contracts.prediction_batch import (
    CONTENT_TYPE,
    MAX_BATCH_ROWS,
    BatchHeaders,
    InvalidBatch,
    decode_batch,
    encode_batch,
    new_headers,
)

pytestmark = pytest.mark.contracts


def rows(n: int, **changes: object) -> dict[str, list[object]]:
    now = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1e6)
    base = [
        (f"r{i}", "1.0.0", "production", now + i, 1.5, False, i % 2, 0.9, {"x": float(i), "c": "a"})
        for i in range(n)
    ]
    out = columns(base)  # type: ignore[arg-type]
    out.update(changes)  # type: ignore[arg-type]
    return out


def test_a_batch_round_trips_as_arrow_columns() -> None:
    table = decode_batch(encode_batch(rows(1000)))
    assert table.num_rows == 1000
    assert table.column("feature.x").type == pa.float64()
    assert table.column("feature.c").type == pa.string()
    assert table.column("request_id")[999].as_py() == "r999"
    assert table.column("ts").type == pa.timestamp("us", tz="UTC")


def test_headers_are_cloudevents_binary_mode() -> None:
    headers = new_headers("churn", 10, source="svc/a", correlationid="c-1")
    encoded = dict(headers.encode())
    assert encoded["content-type"] == CONTENT_TYPE.encode()
    assert encoded["ce_type"] == b"mlcp.prediction.batch_logged.v1"
    assert encoded["ce_subject"] == b"churn"
    again = BatchHeaders.decode(headers.encode())
    assert (again.id, again.subject, again.rows, again.correlationid) == (
        headers.id, "churn", 10, "c-1",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([("content-type", b"application/json")], "content-type"),
        ([("content-type", CONTENT_TYPE.encode())], "ce_specversion is missing"),
    ],
)
def test_bad_headers_are_refused_naming_why(headers: list[tuple[str, bytes]], message: str) -> None:
    with pytest.raises(InvalidBatch, match=message):
        BatchHeaders.decode(headers)


def test_a_malformed_body_is_refused() -> None:
    with pytest.raises(InvalidBatch, match="not an Arrow IPC stream"):
        decode_batch(b'{"json": true}')


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"latency_ms": [-1.0] * 3}, "negative"),
        ({"version": [None] * 3}, "has nulls"),
        ({"prediction": [None] * 3}, "prediction is null"),
        ({"unexpected": [1, 2, 3]}, "unknown column"),
        ({"feature.v": [[1], [2], [3]]}, "feature.v"),
    ],
)
def test_a_wrong_schema_is_refused_naming_the_column(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidBatch, match=message):
        encode_batch(rows(3, **changes))


def test_a_missing_column_is_refused_on_decode() -> None:
    table = pa.table({"request_id": ["a"]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(InvalidBatch, match="column 'version' is missing"):
        decode_batch(sink.getvalue().to_pybytes())


def test_too_many_rows_or_bytes_are_refused() -> None:
    with pytest.raises(InvalidBatch, match="MAX_BATCH_ROWS"):
        encode_batch(rows(MAX_BATCH_ROWS + 1))
    with pytest.raises(InvalidBatch, match="MAX_BATCH_BYTES"):
        decode_batch(b"\0" * 1_000_001)
    wide = rows(2000, **{f"feature.f{i}": ["x" * 50] * 2000 for i in range(20)})
    with pytest.raises(InvalidBatch, match="MAX_BATCH_BYTES"):
        encode_batch(wide)
