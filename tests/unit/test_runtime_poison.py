"""Poison never stalls a consumer: dead letters that always fit their topic, batches bisected
down to their bad events, decoding failures of any kind classified as the record's, repeated
log lines held back. (Against real Kafka and PostgreSQL: tests/integration/test_runtime_poison.py.)
"""

from __future__ import annotations

import hashlib
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from mlcp.contracts import DataArrived, ModelVersionRegistered, encode_event, new_event
from mlcp.runtime.batch import BatchConsumer
from mlcp.runtime.consumer import UNDECODABLE, Outcome, Poison, Refused, poison_reason
from mlcp.runtime.dlq import (
    H_HEADERS_DROPPED,
    H_OFFSET,
    H_REASON,
    H_SHA256,
    H_TOPIC,
    H_TRUNCATED,
    H_VALUE_BYTES,
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
    PREFIX_BYTES,
    UNEXPECTED_SOURCE,
    DeadLetter,
    default_letter_limit,
    letter_size,
)
from mlcp.runtime.logs import LogThrottle
from mlcp.runtime.metrics import RuntimeMetrics
from mlcp.runtime.settings import Settings
from tests.contracts.contract_examples import EXAMPLES

pytestmark = pytest.mark.unit


# --------------------------------------------------------------------------- dead letters


def letter(value: bytes | None, **overrides: Any) -> DeadLetter:
    fields: dict[str, Any] = {
        "topic": "mlcp.data.arrived.v1",
        "partition": 1,
        "offset": 77,
        "key": b"ds",
        "value": value,
        "headers": [("traceparent", b"00-abc-def-01")],
        "consumer": "trainer",
        "reason": "too_large",
        "error": "record is 2097152 bytes, over the 1048576 limit",
        "attempts": 0,
        "timestamp": 1_700_000_000_000,
    }
    fields.update(overrides)
    return DeadLetter(**fields)


def test_a_letter_that_fits_is_the_whole_original_with_its_digest() -> None:
    fitted = letter(b'{"a": 1}').fitted(default_letter_limit())
    headers = dict(fitted.headers)
    assert not fitted.truncated
    assert fitted.value == b'{"a": 1}'
    assert fitted.key == b"ds"
    assert headers[H_SHA256] == hashlib.sha256(b'{"a": 1}').hexdigest().encode()
    assert headers[H_VALUE_BYTES] == b"8"
    assert H_TRUNCATED not in headers


def test_a_letter_over_the_limit_keeps_its_headers_and_a_prefix() -> None:
    original = bytes(range(256)) * 8192  # 2 MiB
    fitted = letter(original).fitted(default_letter_limit())
    headers = dict(fitted.headers)
    assert fitted.truncated
    assert letter_size(fitted.key, fitted.value, fitted.headers) <= KAFKA_DEFAULT_MAX_MESSAGE_BYTES
    assert fitted.value == original[:PREFIX_BYTES]
    assert headers[H_TRUNCATED] == str(PREFIX_BYTES).encode()
    assert headers[H_SHA256] == hashlib.sha256(original).hexdigest().encode(), "of the original"
    assert headers[H_VALUE_BYTES] == str(len(original)).encode()
    assert headers[H_REASON] == b"too_large"
    assert headers[H_TOPIC] == b"mlcp.data.arrived.v1"
    assert headers[H_OFFSET] == b"77"
    assert headers["traceparent"] == b"00-abc-def-01", "the original headers are kept"


@pytest.mark.parametrize("limit", [16_384, 40_000, 200_000, 1_048_588])
def test_a_truncated_letter_always_fits_even_with_huge_headers_and_key(limit: int) -> None:
    hostile = letter(
        b"x" * 3_000_000,
        key=b"k" * 100_000,
        headers=[("big", b"h" * 900_000), ("small", b"s")],
        error="E" * 50_000,
    )
    fitted = hostile.fitted(limit)
    headers = dict(fitted.headers)
    assert fitted.truncated
    assert letter_size(fitted.key, fitted.value, fitted.headers) <= limit
    assert headers[H_HEADERS_DROPPED] == b"1", "the 900 kB header is left out, the small kept"
    assert headers["small"] == b"s"
    assert headers[H_TRUNCATED] == str(len(fitted.value or b"")).encode()
    assert fitted.value == b"x" * len(fitted.value or b"")


def test_letters_of_the_same_record_share_a_position_and_others_do_not() -> None:
    assert letter(b"a").position == letter(b"b", reason="other").position
    assert letter(b"a").position != letter(b"a", offset=78).position
    # A topic recreated under the same name starts its offsets again: the time tells them apart.
    assert letter(b"a").position != letter(b"a", timestamp=1_700_000_000_001).position


# --------------------------------------------------------------------------- settings


def test_the_limits_default_to_the_contracts_and_can_be_lowered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("MLCP_MAX_RECORD_BYTES", "MLCP_MAX_JSON_DEPTH"):
        monkeypatch.delenv(name, raising=False)
    assert (Settings().max_record_bytes, Settings().max_json_depth) == (1024 * 1024, 64)
    monkeypatch.setenv("MLCP_MAX_RECORD_BYTES", "65536")
    monkeypatch.setenv("MLCP_MAX_JSON_DEPTH", "16")
    settings = Settings()
    assert (settings.max_record_bytes, settings.max_json_depth) == (65536, 16)
    consumer = batch_consumer(max_record_bytes=4096, max_json_depth=8)
    deep = b'{"data": ' + b"[" * 9 + b"]" * 9 + b"}"
    records = [record(0, arrived(0) + b" " * 4096), record(1, deep)]
    poison: list[Poison] = []
    consumer._decode(records, [r.value for r in records], poison)
    assert [reason for _, reason, _, _ in poison] == ["too_large", "too_deep"]


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    "exc",
    [
        RecursionError("deep"),
        MemoryError(),
        TypeError("bad"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "x"),
    ],
)
def test_anything_decoding_raises_is_the_records_fault(exc: Exception) -> None:
    reason, error = poison_reason(exc)
    assert reason == UNDECODABLE
    assert error.startswith(f"{type(exc).__name__} while decoding")


# --------------------------------------------------------------------------- batches


def batch_consumer(event_type: str = DataArrived.TYPE, **settings: Any) -> BatchConsumer:
    async def handler(events: list[Any], tx: Any) -> None:
        raise AssertionError("replaced by the test")

    def no_pool() -> Any:
        raise AssertionError("no database here")

    return BatchConsumer(
        event_type,
        handler,
        service="svc",
        settings=Settings(retry_initial_backoff_s=0.001, **settings),
        metrics=RuntimeMetrics("svc"),
        pool=no_pool,
    )


def run_without_infrastructure(
    monkeypatch: pytest.MonkeyPatch, consumer: BatchConsumer, apply_batch: Any
) -> list[Poison]:
    """``consumer`` with ``apply_batch`` for its transactions; the list its dead letters land in
    (instead of Kafka)."""
    letters: list[Poison] = []

    async def dead_letter_many(poison: list[Poison]) -> Outcome:
        letters.extend(poison)
        return Outcome.DEAD_LETTERED

    monkeypatch.setattr(consumer, "_apply_batch", apply_batch)
    monkeypatch.setattr(consumer, "_dead_letter_many", dead_letter_many)
    return letters


def record(offset: int, value: bytes) -> Any:
    return SimpleNamespace(
        topic=DataArrived.TYPE,
        partition=offset % 3,
        offset=offset,
        key=b"ds",
        value=value,
        headers=[],
        timestamp=1_700_000_000_000 + offset,
    )


def arrived(i: int) -> bytes:
    data = DataArrived(
        dataset="ds",
        batch_id=f"b{i}",
        uri=f"file:///tmp/b{i}.csv",
        rows=1,
        sha256="a" * 64,
        completeness=1.0,
    )
    return encode_event(new_event(data, source="mlcp/test"))


async def test_a_failing_batch_is_bisected_down_to_its_bad_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer = batch_consumer(handler_max_attempts=2)
    records = [record(i, arrived(i)) for i in range(1000)]
    bad_offsets = {3, 500, 999}
    bad_ids: set[str] = set()
    applied: list[str] = []
    transactions = 0

    async def apply_batch(events: list[Any], event_type: str, handler: Any) -> int:
        nonlocal transactions
        transactions += 1
        if any(e.id in bad_ids for e in events):
            raise RuntimeError("handler refuses")
        fresh = [e.id for e in events if e.id not in applied]
        applied.extend(fresh)
        return len(fresh)

    letters = run_without_infrastructure(monkeypatch, consumer, apply_batch)
    poison: list[Poison] = []
    events, by_id = consumer._decode(records, [r.value for r in records], poison)
    bad_ids.update(e.id for e in events if by_id[e.id].offset in bad_offsets)

    assert await consumer.process_batch(records) is Outcome.APPLIED

    good = [e.id for e in events if e.id not in bad_ids]
    assert applied == good, "every good event applied once, in the batch's order"
    assert sorted(r.offset for r, *_ in letters) == sorted(bad_offsets), "each bad one once"
    assert {reason for _, reason, _, _ in letters} == {"handler_failed"}
    assert all("handler refuses" in error for _, _, error, _ in letters)
    assert transactions <= 2 + 2 * len(bad_offsets) * 10, "bisection, not one by one"


@pytest.mark.parametrize("also_failing", [False, True])
async def test_events_a_batch_handler_refuses_are_dead_lettered_once_and_the_rest_applied(
    monkeypatch: pytest.MonkeyPatch, also_failing: bool
) -> None:
    """``Refused`` in a batch: its events go to the DLQ with the handler's reason, without
    retries, and the batch is applied without them — also inside a bisection (another event
    that keeps failing makes the consumer split the batch, and a half meets the refusal)."""
    consumer = batch_consumer(handler_max_attempts=2)
    records = [record(i, arrived(i)) for i in range(64)]
    events, by_id = consumer._decode(records, [r.value for r in records], [])
    refused = {e.id for e in events if by_id[e.id].offset in {10, 40}}
    failing = {e.id for e in events if by_id[e.id].offset == 50} if also_failing else set()
    applied: list[str] = []

    async def apply_batch(batch: list[Any], event_type: str, handler: Any) -> int:
        if any(e.id in failing for e in batch):  # first: the refusals meet the bisection
            raise RuntimeError("handler refuses")
        if mine := {e.id: "label 'yes' is not a bool" for e in batch if e.id in refused}:
            raise Refused(mine, reason="target_mismatch")
        applied.extend(e.id for e in batch)
        return len(batch)

    letters = run_without_infrastructure(monkeypatch, consumer, apply_batch)
    assert await consumer.process_batch(records) is Outcome.APPLIED

    assert applied == [e.id for e in events if e.id not in refused | failing], "each once"
    got = sorted((r.offset, reason, attempts) for r, reason, _, attempts in letters)
    expected = [(10, "target_mismatch", 1), (40, "target_mismatch", 1)]
    if also_failing:
        assert (50, "handler_failed") in {(o, reason) for o, reason, _ in got}
        got = [row for row in got if row[0] != 50]
    assert got == expected, "each refused event dead-lettered once, no retries"


async def test_a_fast_decoder_that_raises_does_not_stop_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer = batch_consumer()

    def explode(values: Any) -> Any:
        raise RecursionError("a bug or a pathological record in the fast path")

    monkeypatch.setattr(consumer._decoder, "decode", explode)
    deep = b'{"specversion": "1.0", "data": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    records = [
        record(0, arrived(0)),
        record(1, deep),
        record(2, b"\xff\xfe"),
        record(3, arrived(3)),
    ]
    poison: list[Poison] = []
    events, _ = consumer._decode(records, [r.value for r in records], poison)
    assert [e.data.batch_id for e in events] == ["b0", "b3"]
    assert [(r.offset, reason) for r, reason, _, _ in poison] == [
        (1, "too_deep"),
        (2, "invalid_json"),
    ]


async def test_a_batch_dead_letters_an_event_from_a_foreign_source_and_applies_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The source check of the bus policy holds in a batch too: an event on the registry's
    topic that does not come from the registry is poison (unexpected_source), alone."""
    event_type = ModelVersionRegistered.TYPE
    consumer = batch_consumer(event_type=event_type)
    data = ModelVersionRegistered.model_validate(EXAMPLES[event_type])
    sources = ["mlcp/registry", "mlcp/monitor", "mlcp/registry"]
    events = [new_event(data, source=source) for source in sources]
    records = [
        SimpleNamespace(**{**vars(record(i, encode_event(e))), "topic": event_type})
        for i, e in enumerate(events)
    ]
    applied: list[str] = []

    async def apply_batch(batch: list[Any], event_type: str, handler: Any) -> int:
        applied.extend(e.id for e in batch)
        return len(batch)

    letters = run_without_infrastructure(monkeypatch, consumer, apply_batch)
    assert await consumer.process_batch(records) is Outcome.APPLIED

    assert applied == [events[0].id, events[2].id]
    [(bad, reason, error, attempts)] = letters
    assert (bad.offset, reason, attempts) == (1, UNEXPECTED_SOURCE, 0)
    assert "'mlcp/monitor' may not emit" in error


# --------------------------------------------------------------------------- logs


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_repeating_line_is_written_once_per_interval_with_its_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttle = LogThrottle(logging.getLogger("t.throttle"), interval_s=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t.throttle"):
        assert throttle.warning(("db", "t1"), "database away on %s", "t1")
        for _ in range(500):
            clock.now += 0.1
            assert not throttle.warning(("db", "t1"), "database away on %s", "t1")
        assert throttle.warning(("db", "t2"), "database away on %s", "t2"), "another key"
        clock.now += 11
        assert throttle.warning(("db", "t1"), "database away on %s", "t1")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "database away on t1",
        "database away on t2",
        "database away on t1 (500 more like this in the last 61 s)",
    ]


def test_the_throttle_forgets_old_keys_to_stay_bounded() -> None:
    clock = Clock()
    throttle = LogThrottle(logging.getLogger("t.bounded"), interval_s=1, clock=clock)
    for i in range(5 * LogThrottle.MAX_KEYS):
        clock.now += 0.01
        throttle.warning(i, "line %d", i)
    assert len(throttle._seen) <= LogThrottle.MAX_KEYS
