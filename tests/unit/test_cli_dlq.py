"""`mlcp dlq` without Kafka: untrusted bytes are previewed safely (escaped control characters,
hex for binary, bounded length), a DLQ record's headers become its fields, a replay goes only
to the topic the DLQ belongs to, and bad arguments are refused before connecting."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from mlcp.cli.dlq import (
    DlqError,
    Letter,
    matches,
    preview,
    replay_target,
    resolve_topic,
    safe_text,
    with_original,
)
from mlcp.cli.main import app
from mlcp.runtime.dlq import DeadLetter

pytestmark = pytest.mark.unit

SOURCE = "t1.mlcp.data.arrived.v1"
DLQ = f"{SOURCE}.dlq"


def letter(**overrides: object) -> Letter:
    """A DLQ record as a consumer of ``DLQ`` reads it, headers from the runtime's DeadLetter."""
    dead = DeadLetter(
        topic=SOURCE,
        partition=2,
        offset=41,
        key=b"churn-events",
        value=b'{"specversion": "1.0", "id": "e-1", "type": "mlcp.data.arrived.v1"}',
        headers=[("traceparent", b"00-abc-01"), ("mlcp-dlq-reason", b"stale")],
        consumer="trainer",
        reason="handler_failed",
        error="db down",
        attempts=5,
    )
    fields: dict[str, object] = {
        "topic": DLQ,
        "partition": 0,
        "offset": 7,
        "timestamp": 1_700_000_000_000,
        "key": dead.key,
        "value": dead.value,
        "headers": dead.record_headers(),
    }
    fields.update(overrides)
    return Letter.from_record(SimpleNamespace(**fields))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, "(null)"),
        (b"", "(empty)"),
        (b"plain text", "plain text"),
        (b"line1\nline2\t\x1b[31mred", "line1\\nline2\\t\\x1b[31mred"),
        ("bidi \u202e evil".encode(), "bidi \\u202e evil"),
        (b"\x00\x01\xff\xfe", "binary 4 B: 00 01 ff fe"),
        (b"\x00" * 40, "binary 40 B: " + " ".join(["00"] * 16) + " …"),
    ],
)
def test_preview_is_terminal_safe(data: bytes | None, expected: str) -> None:
    assert preview(data) == expected


def test_preview_bounds_long_payloads_and_multibyte_cuts() -> None:
    text = preview(b"x" * 5_000_000, limit=20)
    assert text == "x" * 20 + "… (5000000 B)"
    # The slice that bounds the decoding may cut a multi-byte character: still text.
    assert preview("é".encode() * 100, limit=10) == "é" * 10 + "… (200 B)"


def test_safe_text_escapes_before_cutting() -> None:
    assert safe_text("ab\ncd", limit=4) == "ab\\n…"
    assert safe_text("naïve ✓") == "naïve ✓"
    assert "\x1b" not in safe_text("\x1b]0;title\x07")


def test_a_dlq_record_becomes_its_fields() -> None:
    record = letter()
    assert (record.reason, record.error, record.consumer) == (
        "handler_failed",
        "db down",
        "trainer",
    )
    assert record.source_topic == SOURCE
    assert record.where == "0@7"
    # The runtime drops stale mlcp-dlq-* headers; the replay sends only the original ones.
    assert record.original_headers == [("traceparent", b"00-abc-01")]
    assert record.event() == {"id": "e-1", "type": "mlcp.data.arrived.v1"}
    assert record.describe() == "data.arrived.v1 e-1"
    doc = record.to_json()
    assert doc["original"] == {"topic": SOURCE, "partition": 2, "offset": 41}
    assert doc["attempts"] == 5
    assert base64.b64decode(doc["value"]["base64"]) == record.value
    assert doc["headers"] == [
        {
            "name": "traceparent",
            "base64": base64.b64encode(b"00-abc-01").decode(),
            "preview": "00-abc-01",
        }
    ]


def test_undecodable_records_still_list() -> None:
    record = letter(value=b"\xff\xfe not json", headers=[("mlcp-dlq-attempts", b"x")], key=None)
    assert record.event() is None
    assert record.describe().startswith("binary")
    assert record.reason == "(none)"
    doc = record.to_json()
    assert doc["attempts"] is None
    assert doc["key"] == {"base64": None, "preview": "(null)"}
    assert doc["original"]["topic"] is None


def test_filters() -> None:
    record = letter()
    assert matches(record, None, None)
    assert matches(record, "data.arrived", "handler_failed")
    assert not matches(record, "run.finished", None)
    assert not matches(record, None, "invalid_json")


def test_replay_goes_only_to_the_topic_the_dlq_belongs_to() -> None:
    assert replay_target(letter()) == SOURCE
    with pytest.raises(DlqError, match="no mlcp-dlq-topic header") as missing:
        replay_target(letter(headers=[("mlcp-dlq-reason", b"x")]))
    assert missing.value.exit_code == 1
    forged = [("mlcp-dlq-topic", b"t1.mlcp.model.promoted.v1")]
    with pytest.raises(DlqError, match="not from its DLQ's topic"):
        replay_target(letter(headers=forged))


def test_dlq_topic_names() -> None:
    assert resolve_topic(DLQ, "t1.") == DLQ
    assert resolve_topic("mlcp.data.arrived.v1.dlq", "t1.") == DLQ
    with pytest.raises(DlqError, match="not an mlcp dead-letter topic"):
        resolve_topic("t1.mlcp.data.arrived.v1", "t1.")


@pytest.mark.parametrize(
    "args",
    [
        ["replay"],
        ["replay", DLQ, "0"],
        ["replay", DLQ, "0", "1", "--all"],
        ["replay", DLQ, "0", "1", "--reason", "x"],
    ],
)
def test_replay_usage_errors_exit_2_before_connecting(args: list[str]) -> None:
    # An unroutable bootstrap: reaching Kafka would fail differently (exit 3).
    env = {"MLCP_KAFKA_BOOTSTRAP": "127.0.0.1:1", "MLCP_TOPIC_PREFIX": "t1."}
    result = CliRunner().invoke(app, ["dlq", *args], env=env)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output + result.stderr


def test_bad_settings_exit_2() -> None:
    env = {"MLCP_KAFKA_BOOTSTRAP": "127.0.0.1:1", "MLCP_TOPIC_PREFIX": "bad prefix!"}
    result = CliRunner().invoke(app, ["dlq", "list"], env=env)
    assert result.exit_code == 2, result.output
    assert "MLCP_TOPIC_PREFIX" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_help_explains_when_to_replay() -> None:
    result = CliRunner().invoke(app, ["dlq", "replay", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "inbox" in result.output
    assert "fixed" in result.output


def truncated_letter(original: bytes) -> Letter:
    dead = DeadLetter(
        topic=SOURCE,
        partition=2,
        offset=41,
        key=b"churn-events",
        value=original,
        headers=[("traceparent", b"00-abc-01")],
        consumer="trainer",
        reason="too_large",
        error="record is 300000 bytes",
        attempts=0,
    )
    fitted = dead.fitted(100_000)
    assert fitted.truncated
    return letter(key=fitted.key, value=fitted.value, headers=fitted.headers)


def test_a_truncated_letter_says_so_and_how_much_it_keeps() -> None:
    original = b"x" * 300_000
    cut = truncated_letter(original)
    assert cut.truncated
    assert cut.describe().startswith("TRUNCATED: 65,536 of 300,000 B kept; xxx")
    doc = cut.to_json()
    assert doc["truncated"] is True
    assert doc["value"]["original_bytes"] == 300_000
    assert doc["value"]["sha256"] == hashlib.sha256(original).hexdigest()
    assert cut.origin == (SOURCE, 2, 41)
    whole = letter()
    assert not whole.truncated
    assert whole.to_json()["truncated"] is False


def test_a_truncated_letter_replays_only_its_own_original() -> None:
    original = b"x" * 300_000
    cut = truncated_letter(original)
    found = Letter.from_record(
        SimpleNamespace(
            topic=SOURCE,
            partition=2,
            offset=41,
            timestamp=1,
            key=b"churn-events",
            value=original,
            headers=[("traceparent", b"00-abc-01")],
        )
    )
    resolved = with_original(cut, found)
    assert (resolved.key, resolved.value) == (b"churn-events", original)
    assert resolved.original_headers == [("traceparent", b"00-abc-01")]
    assert not resolved.truncated
    assert replay_target(resolved) == SOURCE
    impostor = dataclasses.replace(found, value=b"y" * 300_000)
    with pytest.raises(DlqError, match="is not its original"):
        with_original(cut, impostor)
