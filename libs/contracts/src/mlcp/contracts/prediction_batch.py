"""``mlcp.prediction.batch_logged.v1``: many predictions in one record, columnar.

The one binary-mode event of the catalog. A CloudEvent in Kafka *binary* mode: its attributes
travel in ``ce_*`` record headers, ``content-type`` is ``application/vnd.apache.arrow.stream``
and the record's value is one Arrow IPC stream of up to ``MAX_BATCH_ROWS`` rows (one per
prediction, as ``PredictionLogged`` describes it) and at most ``MAX_BATCH_BYTES`` bytes. The
Kafka key (and ``ce_subject``) is the model. ``docs/serving.md`` shows the layout.

This module needs pyarrow (``pip install 'mlcp-contracts[arrow]'``); ``mlcp.contracts`` itself
does not import it, so the JSON contracts stay light.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from mlcp.contracts import topics
from mlcp.contracts.errors import ContractError

TYPE = topics.PREDICTION_BATCH_LOGGED
CONTENT_TYPE = "application/vnd.apache.arrow.stream"
MAX_BATCH_ROWS = 10_000
"""Rows of one batch: a consumer validates and folds a whole batch at once."""
MAX_BATCH_BYTES = 1_000_000
"""Bytes of one record's value: under Kafka's default ``max.message.bytes`` (1 MiB) with room
for the headers."""
FEATURE_PREFIX = "feature."
"""A feature ``f`` is the column ``feature.f`` (float64 for numbers, utf8 for categories)."""

FIXED_COLUMNS: dict[str, str] = {
    "request_id": "string",
    "version": "string",
    "alias": "string",
    "ts": "timestamp[us, tz=UTC]",
    "latency_ms": "double",
    "error": "bool",
    "prediction": "double | int64 | bool | string",
    "probability": "double",
}
"""Every batch has these columns (Arrow types), then one ``feature.<name>`` column per feature.
``request_id``, ``version``, ``ts``, ``latency_ms`` and ``error`` are never null; ``alias``,
``prediction`` (null only when ``error``) and ``probability`` may be. ``prediction`` has one
type per batch."""
NOT_NULL = ("request_id", "version", "ts", "latency_ms", "error")


class InvalidBatch(ContractError):
    """A batch record that breaks the contract: the message names what (the DLQ reason)."""

    reason = "invalid_batch"


@dataclass(frozen=True)
class BatchHeaders:
    """The CloudEvents attributes of one batch record (its ``ce_*`` headers)."""

    id: str
    source: str
    subject: str
    """The model; also the Kafka key."""
    time: datetime
    rows: int
    correlationid: str | None = None

    def encode(self) -> list[tuple[str, bytes]]:
        """Kafka record headers in CloudEvents' Kafka binary binding."""
        headers = {
            "ce_specversion": "1.0",
            "ce_id": self.id,
            "ce_source": self.source,
            "ce_type": TYPE,
            "ce_time": self.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "ce_subject": self.subject,
            "ce_mlcprows": str(self.rows),
            "content-type": CONTENT_TYPE,
        }
        if self.correlationid:
            headers["ce_correlationid"] = self.correlationid
        return [(k, v.encode()) for k, v in headers.items()]

    @classmethod
    def decode(cls, headers: Sequence[tuple[str, bytes]]) -> BatchHeaders:
        """The attributes of a record's headers; ``InvalidBatch`` naming a missing or bad one."""
        found = {k: v.decode("utf-8", "replace") for k, v in headers}
        if found.get("content-type") != CONTENT_TYPE:
            raise InvalidBatch(f"content-type {found.get('content-type')!r} is not {CONTENT_TYPE}")
        for name in ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject"):
            if not found.get(name):
                raise InvalidBatch(f"header {name} is missing")
        if found["ce_type"] != TYPE or found["ce_specversion"] != "1.0":
            raise InvalidBatch(f"ce_type {found['ce_type']!r} / specversion is not {TYPE} / 1.0")
        try:
            when = datetime.fromisoformat(found["ce_time"])
            rows = int(found.get("ce_mlcprows", "-1"))
        except ValueError as exc:
            raise InvalidBatch(f"bad ce_time or ce_mlcprows: {exc}") from None
        return cls(
            found["ce_id"],
            found["ce_source"],
            found["ce_subject"],
            when,
            rows,
            found.get("ce_correlationid"),
        )


def new_headers(
    model: str, rows: int, *, source: str, correlationid: str | None = None
) -> BatchHeaders:
    """Attributes of a new batch: a fresh id, the time now."""
    return BatchHeaders(str(uuid.uuid4()), source, model, datetime.now(UTC), rows, correlationid)


def encode_batch(columns: Mapping[str, Sequence[Any]]) -> bytes:
    """One Arrow IPC stream of ``columns`` (the fixed ones and ``feature.*``), checked against
    the contract; ``InvalidBatch`` when it breaks it (too many rows or bytes, a bad column)."""
    arrays: dict[str, pa.Array] = {}
    for name, values in columns.items():
        try:
            arrays[name] = _column(name, values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise InvalidBatch(f"column {name!r} does not fit its type: {exc}") from None
    table = pa.table(arrays)
    validate_table(table)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    body: bytes = sink.getvalue().to_pybytes()
    if len(body) > MAX_BATCH_BYTES:
        raise InvalidBatch(f"batch is {len(body)} bytes, over MAX_BATCH_BYTES={MAX_BATCH_BYTES}")
    return body


def _column(name: str, values: Sequence[Any]) -> pa.Array:
    if name == "ts":
        return pa.array(values, type=pa.timestamp("us", tz="UTC"))
    if name in ("latency_ms", "probability"):
        return pa.array(values, type=pa.float64())
    if name == "error":
        return pa.array(values, type=pa.bool_())
    if name in ("request_id", "version", "alias"):
        return pa.array(values, type=pa.string())
    if name.startswith(FEATURE_PREFIX):
        return _feature_array(values)
    return pa.array(values)


def _feature_array(values: Sequence[Any]) -> pa.Array:
    if any(isinstance(v, str) for v in values):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return pa.array(values, type=pa.float64())


def decode_batch(body: bytes) -> pa.Table:
    """The table of a batch record's value, validated whole-column; ``InvalidBatch`` otherwise
    (a malformed stream, a wrong schema, too many rows or bytes)."""
    if len(body) > MAX_BATCH_BYTES:
        raise InvalidBatch(f"batch is {len(body)} bytes, over MAX_BATCH_BYTES={MAX_BATCH_BYTES}")
    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InvalidBatch(f"not an Arrow IPC stream: {exc}") from None
    validate_table(table)
    return table


def validate_table(table: pa.Table) -> None:
    """Check a batch's columns and limits on whole columns (no per-row Python objects)."""
    if table.num_rows > MAX_BATCH_ROWS:
        raise InvalidBatch(f"{table.num_rows} rows, over MAX_BATCH_ROWS={MAX_BATCH_ROWS}")
    if table.num_rows == 0:
        raise InvalidBatch("an empty batch")
    schema = table.schema
    expected = {
        "request_id": pa.types.is_string,
        "version": pa.types.is_string,
        "alias": pa.types.is_string,
        "ts": lambda t: pa.types.is_timestamp(t) and t.tz in ("UTC", "+00:00"),
        "latency_ms": pa.types.is_float64,
        "error": pa.types.is_boolean,
        "probability": pa.types.is_float64,
        "prediction": lambda t: (
            pa.types.is_float64(t)
            or pa.types.is_int64(t)
            or pa.types.is_boolean(t)
            or pa.types.is_string(t)
            or pa.types.is_null(t)
        ),
    }
    for name, check in expected.items():
        if name not in schema.names:
            raise InvalidBatch(f"column {name!r} is missing")
        if not check(schema.field(name).type):
            raise InvalidBatch(
                f"column {name!r} is {schema.field(name).type}, not {FIXED_COLUMNS[name]}"
            )
    for name in schema.names:
        if name in expected:
            continue
        if not name.startswith(FEATURE_PREFIX) or name == FEATURE_PREFIX:
            raise InvalidBatch(f"unknown column {name!r} (features are {FEATURE_PREFIX}<name>)")
        kind = schema.field(name).type
        if not (pa.types.is_float64(kind) or pa.types.is_string(kind) or pa.types.is_null(kind)):
            raise InvalidBatch(f"feature column {name!r} is {kind}, not double or string")
    for name in NOT_NULL:
        if table.column(name).null_count:
            raise InvalidBatch(f"column {name!r} has nulls")
    if pc.any(pc.less(table.column("latency_ms"), 0)).as_py():
        raise InvalidBatch("column 'latency_ms' has negative values")
    missing = pc.and_(pc.invert(table.column("error")), pc.is_null(table.column("prediction")))
    if pc.any(missing).as_py():
        raise InvalidBatch("prediction is null where error is false")
