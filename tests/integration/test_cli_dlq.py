"""`mlcp dlq list / replay` against the real Kafka: a record dead-lettered the way the runtime
does it is listed with its reason, error and origin, and a replay puts exactly the original
key, bytes and headers back on the original topic; refusals and an unreachable Kafka end with
one line on stderr and exit 1 / 3, never a traceback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sys
from dataclasses import dataclass, replace

import pytest

from mlcp.contracts import DataArrived, dlq_topic, encode_event, new_event
from mlcp.runtime.dlq import DeadLetter, publish_dead_letter
from mlcp.runtime.kafka import durable_producer
from mlcp.runtime.settings import Settings
from tests.conftest import ROOT, Infra, free_port
from tests.integration.kafka_tools import create_topics, delete_before, produce, read_all

pytestmark = pytest.mark.integration

ORIGINAL_HEADERS = [
    ("content-type", b"application/cloudevents+json"),
    ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
]


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


async def mlcp(infra: Infra, prefix: str, *args: str, stdin: bytes = b"") -> Result:
    """Run ``python -m mlcp.cli dlq …`` as an operator would (a replay as the admin, the only
    principal that may write any topic); stdin closed unless given."""
    principal = "admin" if args[0] == "replay" else "operator"
    env = {**os.environ, **infra.env(principal), "MLCP_TOPIC_PREFIX": prefix}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mlcp.cli",
        "dlq",
        *args,
        env={**env, "COLUMNS": "200"},
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), 120)
    except TimeoutError:
        proc.kill()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, stdout.decode(), stderr.decode())


def data_arrived_bytes() -> tuple[str, bytes]:
    event = new_event(
        DataArrived(
            dataset="churn-events",
            batch_id="b-dlq",
            uri="file:///data/batch.csv",
            rows=10,
            sha256="a" * 64,
            completeness=1.0,
        ),
        source="tests/dlq",
    )
    return event.id, encode_event(event)


async def dead_letter(bus: Settings, *letters: DeadLetter, limit: int | None = None) -> None:
    """Write dead letters exactly as the runtime's consumer does (acks=all, idempotent; fitted
    to ``limit`` bytes, default: Kafka's default message size)."""
    producer = durable_producer(bus, client_id="mlcp-tests")
    await producer.start()
    try:
        for one in letters:
            await publish_dead_letter(producer, one, limit=limit)
    finally:
        await producer.stop()


def letter(
    source: str,
    offset: int,
    value: bytes,
    reason: str,
    *,
    error: str = "boom",
    key: bytes | None = b"churn-events",
    headers: list[tuple[str, bytes]] = ORIGINAL_HEADERS,
) -> DeadLetter:
    return DeadLetter(
        topic=source,
        partition=0,
        offset=offset,
        key=key,
        value=value,
        headers=list(headers),
        consumer="trainer",
        reason=reason,
        error=error,
        attempts=5,
    )


async def seeded(infra: Infra, prefix: str) -> tuple[str, str, str, bytes]:
    """A handler failure and a binary poison record in <prefix>mlcp.data.arrived.v1.dlq."""
    source = f"{prefix}{DataArrived.TYPE}"
    dlq = dlq_topic(source)
    await create_topics(infra.admin, [source, dlq], partitions=1)
    infra.prepare_bus(prefix)  # the ACLs (the topics above keep their single partition)
    event_id, raw = data_arrived_bytes()
    await dead_letter(
        infra.settings("svc-trainer"),
        letter(source, 41, raw, "handler_failed", error="db down\n\x1b[31mred\x1b[0m"),
        letter(source, 42, b"\x00\xff" * 5000, "invalid_json", key=None, headers=[]),
    )
    return source, dlq, event_id, raw


async def test_list_shows_every_dead_letter_with_its_origin(infra: Infra, unique: str) -> None:
    prefix = f"t{unique}."
    source, dlq, event_id, raw = await seeded(infra, prefix)

    result = await mlcp(infra, prefix, "list", "--json")
    assert result.code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["matched"], doc["shown"]) == (2, 2)
    failed, poison = doc["records"]
    assert (failed["dlq_topic"], failed["partition"], failed["offset"]) == (dlq, 0, 0)
    assert failed["reason"] == "handler_failed"
    assert failed["error"] == "db down\n\x1b[31mred\x1b[0m"  # full text in JSON
    assert (failed["consumer"], failed["attempts"]) == ("trainer", 5)
    assert failed["original"] == {"topic": source, "partition": 0, "offset": 41}
    assert failed["event"] == {"id": event_id, "type": DataArrived.TYPE}
    assert base64.b64decode(failed["value"]["base64"]) == raw
    assert base64.b64decode(failed["key"]["base64"]) == b"churn-events"
    assert [(h["name"], base64.b64decode(h["base64"])) for h in failed["headers"]] == (
        ORIGINAL_HEADERS
    )
    assert failed["dead_lettered_at"].endswith("+00:00")
    assert poison["event"] is None
    assert poison["key"]["base64"] is None
    assert poison["value"]["bytes"] == 10_000
    assert poison["value"]["preview"].startswith("binary 10000 B: 00 ff")
    assert sorted((c["reason"], c["count"]) for c in doc["counts"]) == [
        ("handler_failed", 1),
        ("invalid_json", 1),
    ]

    only = await mlcp(infra, prefix, "list", "--json", "--reason", "invalid_json")
    assert [r["offset"] for r in json.loads(only.stdout)["records"]] == [1]

    table = await mlcp(infra, prefix, "list")
    assert table.code == 0, table.stderr
    assert dlq in table.stdout
    assert "0@0" in table.stdout
    assert "0@1" in table.stdout
    assert f"data.arrived.v1 {event_id}" in table.stdout
    assert "db down\\n\\x1b[31mred" in table.stdout  # escaped, never sent to the terminal
    assert "\x1b[31m" not in table.stdout
    assert "\x00" not in table.stdout
    assert "binary 10000 B" in table.stdout
    assert "handler_failed" in table.stdout
    assert "invalid_json" in table.stdout

    # Listing joins no group and moves nothing: the records are all still there.
    assert len(await read_all(infra.admin, dlq)) == 2


async def test_replay_republishes_the_original_record(infra: Infra, unique: str) -> None:
    prefix = f"t{unique}."
    source, dlq, _event_id, raw = await seeded(infra, prefix)

    dry = await mlcp(infra, prefix, "replay", dlq, "0", "0", "--dry-run")
    assert dry.code == 0, dry.stderr
    assert f"→ {source}" in dry.stdout
    assert "nothing sent" in dry.stdout
    unconfirmed = await mlcp(infra, prefix, "replay", dlq, "0", "0")
    assert unconfirmed.code == 1
    assert "not confirmed" in unconfirmed.stderr
    assert await read_all(infra.admin, source) == []

    # Confirmed on stdin; the DLQ topic may also be named without the prefix.
    unprefixed = dlq.removeprefix(prefix)
    done = await mlcp(infra, prefix, "replay", unprefixed, "0", "0", stdin=b"y\n")
    assert done.code == 0, done.stderr
    assert f"replayed {dlq} 0@0 → {source} 0@0" in done.stdout
    [record] = await read_all(infra.admin, source)
    assert (record.key, record.value) == (b"churn-events", raw)
    assert list(record.headers) == ORIGINAL_HEADERS  # no mlcp-dlq-* header travels back

    # --all with a filter: only the invalid_json record, with --yes.
    every = await mlcp(infra, prefix, "replay", "--all", "--reason", "invalid_json", "--yes")
    assert every.code == 0, every.stderr
    records = await read_all(infra.admin, source)
    assert [(r.key, r.value, list(r.headers)) for r in records[1:]] == [
        (None, b"\x00\xff" * 5000, [])
    ]
    assert len(await read_all(infra.admin, dlq)) == 2  # the DLQ is left as it was


async def test_replay_refuses_what_does_not_exist_or_names_no_topic(
    infra: Infra, unique: str
) -> None:
    prefix = f"t{unique}."
    source, dlq, _, _ = await seeded(infra, prefix)
    # A record in the DLQ without the mlcp-dlq-topic header (not written by the runtime).
    await produce(infra.admin, dlq, [(b"k", b"{}", [("mlcp-dlq-reason", b"x")])])

    cases = [
        (("replay", dlq, "0", "99", "--yes"), "no record at", 1),
        (("replay", dlq, "7", "0", "--yes"), "no partition 7", 1),
        (("replay", dlq, "0", "2", "--yes"), "no mlcp-dlq-topic header", 1),
        (("replay", f"{prefix}mlcp.nope.v1.dlq", "0", "0", "--yes"), "not an mlcp dead-letter", 1),
    ]
    for args, message, code in cases:
        result = await mlcp(infra, prefix, *args)
        assert result.code == code, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
    assert await read_all(infra.admin, source) == []


async def test_unreachable_kafka_exits_3_without_a_traceback(infra: Infra, unique: str) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    nowhere = replace(infra, kafka_bootstrap=bootstrap)
    for args in (("list",), ("replay", "mlcp.data.arrived.v1.dlq", "0", "0", "--yes")):
        result = await mlcp(nowhere, f"t{unique}.", *args, "--timeout", "5")
        assert result.code == 3, (args, result.stdout, result.stderr)
        assert f"Kafka at {bootstrap} unreachable" in result.stderr
        assert "Traceback" not in result.stdout + result.stderr


async def test_a_truncated_letter_is_listed_as_such_and_replayed_from_its_original(
    infra: Infra, unique: str
) -> None:
    prefix = f"t{unique}."
    source = f"{prefix}{DataArrived.TYPE}"
    dlq = dlq_topic(source)
    await create_topics(infra.admin, [source, dlq], partitions=1)
    infra.prepare_bus(prefix)  # the ACLs (the topics above keep their single partition)
    original = b'{"specversion": "1.0", "pad": "' + b"x" * 300_000 + b'"}'
    await produce(
        infra.settings("pipeline"), source, [(b"churn-events", original, ORIGINAL_HEADERS)]
    )
    # The letter of the record at offset 0, fitted to a 100 kB dead-letter topic.
    too_big = letter(source, 0, original, "too_large", error="record is 300033 bytes")
    await dead_letter(infra.settings("svc-trainer"), too_big, limit=100_000)
    [stored] = await read_all(infra.admin, dlq)
    assert len(stored.value) < len(original)

    listed = json.loads((await mlcp(infra, prefix, "list", "--json")).stdout)
    [record] = listed["records"]
    assert record["truncated"] is True
    assert record["value"]["original_bytes"] == len(original)
    assert record["value"]["bytes"] == len(stored.value)
    assert record["value"]["sha256"] == hashlib.sha256(original).hexdigest()
    assert record["original"] == {"topic": source, "partition": 0, "offset": 0}
    table = await mlcp(infra, prefix, "list")
    assert f"TRUNCATED: {len(stored.value):,} of {len(original):,} B kept" in table.stdout
    assert "1 truncated letter(s) shown" in table.stdout

    done = await mlcp(infra, prefix, "replay", dlq, "0", "0", "--yes")
    assert done.code == 0, done.stderr
    assert f"read back from {source} 0@0" in " ".join(done.stdout.split())
    replayed = (await read_all(infra.admin, source))[-1]
    assert (replayed.key, replayed.value) == (b"churn-events", original), "the whole original"
    assert list(replayed.headers) == ORIGINAL_HEADERS

    # Retention deletes the original: the letter alone cannot be replayed, and says why.
    await delete_before(infra.admin, source, 0, 2)
    gone = await mlcp(infra, prefix, "replay", dlq, "0", "0", "--yes")
    assert gone.code == 1, gone.stdout
    refusal = " ".join(gone.stderr.split())
    assert f"{dlq} 0@0 is truncated (kept {len(stored.value):,} of {len(original)} bytes)" in (
        refusal
    )
    assert f"its original at {source} 0@0 can no longer be read" in refusal
    assert "Traceback" not in gone.stdout + gone.stderr
    every = await mlcp(infra, prefix, "replay", "--all", "--yes")
    assert every.code == 1
    assert "skipped:" in every.stderr
    assert len(await read_all(infra.admin, source)) == 0, "nothing replayed"
