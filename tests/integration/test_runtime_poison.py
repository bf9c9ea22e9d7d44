"""One poison record never stalls a partition, against real Kafka and PostgreSQL.

On every topic of the catalog — the 18 the services consume and the 2 they do not — and with
each kind of consumer (``runtime.on``: one record at a time; ``runtime.on_batch``: one
transaction per Kafka batch, the msgspec fast path for predictions and feedback), the runtime's
test app (tests/integration/runtime_app.py, the same ``ServiceRuntime`` the services run on)
reads, on partition 0 of each topic, four poison records and then valid sentinels on every
partition:

* an oversized record, gzip-compressed by its producer (the broker takes it: ~6 kB on the
  wire), 2 MiB once uncompressed — over the consumer's limit and over the dead-letter topic's;
* a document nested 20,000 levels deep (RecursionError in json and msgspec);
* a body that is not UTF-8;
* a huge array (100,000 items) where the contract wants a list or object of a few.

Then every sentinel is applied once, every poison record is in ``<topic>.dlq`` exactly once with
its reason (the oversized one truncated, with the original's digest and place), the group's lag
returns to zero on every topic, and the log stays under a fixed number of lines.

The closing figures of issue 15 (applied / dead-lettered / duplicated per topic, seconds until
the lag is zero) are printed by the test:

    uv run pytest tests/integration/test_runtime_poison.py -s -q
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mlcp.contracts import EVENT_TYPES, JSON_TOPICS, DataArrived, dlq_topic, encode_event, new_event
from mlcp.policy.acl import load_policy
from mlcp.runtime.dlq import H_SHA256, H_TRUNCATED, H_VALUE_BYTES
from mlcp.runtime.settings import Settings
from tests.conftest import Infra, free_port, wait_for
from tests.contracts.contract_examples import EXAMPLES
from tests.integration.kafka_tools import (
    create_topics,
    lags,
    owner_source,
    produce_to,
    read_all,
    set_topic_config,
)
from tests.integration.test_runtime_crash import env_for, fetchval, wait_ready

pytestmark = pytest.mark.integration

APP = str(Path(__file__).with_name("runtime_app.py"))
MODES = {"single": "consume-catalog", "batch": "consume-catalog-batch"}
PARTITIONS = 3
OVERSIZED_BYTES = 2 * 1024 * 1024
DEEP_LEVELS = 20_000
HUGE_ITEMS = 100_000
EXPECTED_REASONS = {
    "oversized (gzip)": "too_large",
    "20,000 levels": "too_deep",
    "not UTF-8": "invalid_json",
    "huge array": "invalid_data",
}
# Lines the app may write besides one per dead letter: start-up, stop, the odd warning.
LOG_LINES_BESIDES_LETTERS = 60
# Consumer-group membership (20 batch subscribers join one group: ~20 rebalances, each logged
# by every member): start-up noise whose count depends on the subscribers, not on the records.
MEMBERSHIP = re.compile(r"group_coordinator|assigned to partitions|callback for Task")


def writer(infra: Infra, event_type: str) -> Settings:
    """The settings of the principal that may write ``event_type``'s topic (acls.yaml): the
    poison comes from a producer the broker lets in, as a buggy or hostile one would."""
    return infra.settings(load_policy().topics[event_type].write[0])


def sentinel(event_type: str) -> Any:
    data = EVENT_TYPES[event_type].model_validate(EXAMPLES[event_type])
    return new_event(data, source=owner_source(event_type))


def envelope_text(event_type: str, data_text: str) -> bytes:
    """A well-formed envelope of ``event_type`` around ``data_text`` (raw JSON)."""
    head = json.dumps(
        {
            "specversion": "1.0",
            "id": f"poison-{time.monotonic_ns()}",
            "source": owner_source(event_type),
            "type": event_type,
            "time": "2025-03-01T12:00:00Z",
            "subject": "churn",
        }
    )
    return f'{head[:-1]}, "data": {data_text}}}'.encode()


def huge_array_field(event_type: str) -> str:
    """The field where a huge array does the most damage: the first that holds a list or an
    object (its items are validated one by one), else the first."""
    example = EXAMPLES[event_type]
    containers = [k for k, v in example.items() if isinstance(v, list | dict)]
    return (containers or list(example))[0]


def poison_records(event_type: str) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """Kind → (value, producer options)."""
    example = EXAMPLES[event_type]
    data = json.dumps(example)
    padding = json.dumps({**example, "padding": "x" * OVERSIZED_BYTES})
    deep = data[:-1] + ', "x": ' + "[" * DEEP_LEVELS + "]" * DEEP_LEVELS + "}"
    huge = json.dumps({**example, huge_array_field(event_type): [0] * HUGE_ITEMS})
    not_utf8 = envelope_text(event_type, data).replace(b'"specversion"', b'"spec\xff\xfeversion"')
    gzip = {"compression_type": "gzip", "max_request_size": 8 * 1024 * 1024}
    return {
        "oversized (gzip)": (envelope_text(event_type, padding), gzip),
        "20,000 levels": (envelope_text(event_type, deep), {}),
        "not UTF-8": (not_utf8, {}),
        "huge array": (envelope_text(event_type, huge), {}),
    }


async def seed(
    bus: Settings, topic: str, event_type: str
) -> tuple[list[str], dict[int, tuple[str, bytes]]]:
    """Poison on partition 0, then one sentinel per partition, produced as ``bus``; returns
    (sentinel ids, poison offset → (kind, value))."""
    poison: dict[int, tuple[str, bytes]] = {}
    for offset, (kind, (value, options)) in enumerate(poison_records(event_type).items()):
        await produce_to(bus, topic, [(0, b"poison", value, [])], **options)
        poison[offset] = (kind, value)
    sentinels = [sentinel(event_type) for _ in range(PARTITIONS)]
    await produce_to(
        bus,
        topic,
        [(p, (e.subject or "").encode(), encode_event(e), []) for p, e in enumerate(sentinels)],
    )
    return [e.id for e in sentinels], poison


def print_figures(kind: str, rows: list[dict[str, Any]], ready_after: float) -> None:
    """The closing table of issue 15 for one consumer kind (times from the process's start)."""
    print(
        f"\n{kind} consumer: every poison kind on every topic of the catalog "
        f"(/readyz after {ready_after:.1f}s: start-up and group joins)"
    )
    head = (
        f"{'topic':<28} {'applied':>7} {'dead-lettered':>13} {'duplicated':>10} {'lag 0 after':>11}"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        print(
            f"{row['topic']:<28} {row['applied']:>7} {row['dead_lettered']:>13} "
            f"{row['duplicated']:>10} {row['lag_zero_s']:>10.1f}s"
        )
    total = {k: sum(r[k] for r in rows) for k in ("applied", "dead_lettered", "duplicated")}
    slowest = max(r["lag_zero_s"] for r in rows)
    print(
        f"{'all ' + str(len(rows)) + ' topics':<28} {total['applied']:>7} "
        f"{total['dead_lettered']:>13} {total['duplicated']:>10} {slowest:>10.1f}s"
    )


@pytest.mark.parametrize("kind", sorted(MODES))
async def test_poison_on_every_topic_never_stalls_a_partition(
    infra: Infra, unique: str, spawn: Any, kind: str
) -> None:
    prefix, sink = f"t{unique}.", f"poison_{kind}_{unique}"
    group = f"{prefix}mlcp-{sink}"
    topics = {f"{prefix}{t}": t for t in JSON_TOPICS}
    await create_topics(
        infra.admin,
        [name for topic in topics for name in (topic, dlq_topic(topic))],
        partitions=PARTITIONS,
    )
    infra.prepare_bus(prefix)  # the ACLs (the topics above keep their partitions)
    sentinels: dict[str, list[str]] = {}
    poison: dict[str, dict[int, tuple[str, bytes]]] = {}
    for topic, event_type in topics.items():
        bus = writer(infra, event_type)
        sentinels[topic], poison[topic] = await seed(bus, topic, event_type)

    port = free_port()
    env = env_for(infra, sink, prefix, MLCP_HTTP_PORT=str(port))
    started = time.monotonic()
    app = spawn([APP, MODES[kind]], env, kind)
    await wait_ready(port, app)
    ready_after = time.monotonic() - started

    lag_zero_at: dict[str, float] = {}

    async def every_lag_is_zero() -> bool:
        assert app.popen.poll() is None, f"the consumer died:\n{app.output()}"
        now = time.monotonic() - started
        for topic, lag in (await lags(infra.admin, group, list(topics))).items():
            if lag == 0:
                lag_zero_at.setdefault(topic, now)
        return len(lag_zero_at) == len(topics)

    await wait_for(every_lag_is_zero, timeout=240, interval=0.5, what="lag 0 on every topic")

    rows: list[dict[str, Any]] = []
    applied_rows = await fetchval(
        infra,
        f"SELECT coalesce(json_agg(json_build_array(topic, event_id)), '[]') FROM {sink}.applied",
    )
    applied = Counter(tuple(pair) for pair in json.loads(applied_rows))
    for topic, event_type in topics.items():
        letters = await read_all(infra.admin, dlq_topic(topic), timeout=30)
        positions = Counter(
            (dict(r.headers)["mlcp-dlq-partition"], dict(r.headers)["mlcp-dlq-offset"])
            for r in letters
        )
        by_kind = {poison[topic][int(dict(r.headers)["mlcp-dlq-offset"])][0]: r for r in letters}
        mine = {pair: n for pair, n in applied.items() if pair[0] == event_type}
        rows.append(
            {
                "topic": event_type.removeprefix("mlcp."),
                "applied": sum(mine.values()),
                "dead_lettered": len(positions),
                "duplicated": sum(n - 1 for n in mine.values())
                + sum(n - 1 for n in positions.values()),
                "lag_zero_s": lag_zero_at[topic],
            }
        )
        # Every sentinel applied once, on every partition — also partition 0, behind the poison.
        assert sorted(mine) == sorted((event_type, i) for i in sentinels[topic]), topic
        assert set(mine.values()) == {1}, f"{topic}: a sentinel applied twice"
        # Every poison record dead-lettered once, with its reason.
        assert set(positions.values()) == {1}, f"{topic}: a record dead-lettered twice"
        assert {k: dict(r.headers)["mlcp-dlq-reason"].decode() for k, r in by_kind.items()} == (
            EXPECTED_REASONS
        ), topic
        oversized = by_kind["oversized (gzip)"]
        headers = dict(oversized.headers)
        original = next(v for k, v in poison[topic].values() if k == "oversized (gzip)")
        assert H_TRUNCATED in headers, f"{topic}: a 2 MiB letter cannot fit the DLQ whole"
        assert int(headers[H_VALUE_BYTES]) == len(original)
        assert headers[H_SHA256] == hashlib.sha256(original).hexdigest().encode()
        assert original.startswith(oversized.value), "a prefix of the original"
    print_figures(kind, rows, ready_after)

    lines = sum(1 for line in app.output_text().splitlines() if not MEMBERSHIP.search(line))
    letters_written = sum(r["dead_lettered"] for r in rows)
    assert lines <= letters_written + LOG_LINES_BESIDES_LETTERS, app.output()


def as_trainer(infra: Infra, sink: str, prefix: str, **extra: str) -> dict[str, str]:
    """The runtime app as the trainer service reads DataArrived: principal ``svc-trainer``, its
    group ``<prefix>mlcp-trainer``, WRITE and DESCRIBE_CONFIGS on the DLQ by the bus policy
    alone (no super user), its tables in the schema ``sink``."""
    return {
        **env_for(infra, "trainer", prefix, **extra),
        **infra.kafka_env("svc-trainer", prefix=prefix),
        "MLCP_DB_SCHEMA": sink,
    }


async def test_a_poison_record_read_again_after_a_crash_is_dead_lettered_once(
    infra: Infra, unique: str, spawn: Any
) -> None:
    """SIGKILL after the letter was written and before the offset commit: the record is read
    again by the restarted consumer, which must not write a second letter."""
    pipeline = infra.settings("pipeline")
    for kind, mode in (("single", "consume"), ("batch", "consume-batch")):
        prefix, sink = f"t{unique}{kind[0]}.", f"crash_{kind}_{unique}"
        topic = f"{prefix}{DataArrived.TYPE}"
        await create_topics(infra.admin, [topic, dlq_topic(topic)], partitions=1)
        infra.prepare_bus(prefix)
        good = sentinel(DataArrived.TYPE)
        records = [
            (0, b"ds", value, [])
            for value in (b"\xff not utf-8", b"[" * DEEP_LEVELS, encode_event(good))
        ]
        await produce_to(pipeline, topic, records)

        env = as_trainer(infra, sink, prefix, MLCP_CRASH_AT="consumer.after_commit")
        crashing = spawn([APP, mode], env, f"{kind}-crash")
        assert await crashing.wait_exit() == -9, crashing.output()
        assert len(await read_all(infra.admin, dlq_topic(topic))) >= 1

        port = free_port()
        consumer = spawn(
            [APP, mode], as_trainer(infra, sink, prefix, MLCP_HTTP_PORT=str(port)), kind
        )
        await wait_ready(port, consumer)

        await wait_for(
            settled(infra.admin, f"{prefix}mlcp-trainer", topic),
            timeout=60,
            what=f"the restarted {kind} consumer to settle",
        )
        letters = await read_all(infra.admin, dlq_topic(topic))
        reasons = sorted(dict(r.headers)["mlcp-dlq-reason"].decode() for r in letters)
        assert reasons == ["invalid_json", "too_deep"], f"{kind}: each letter once"
        assert await fetchval(infra, f"SELECT count(*) FROM {sink}.ledger") == 1
        consumer.stop()


async def test_letters_fit_the_dlq_topics_own_limit_even_when_it_shrinks(
    infra: Infra, unique: str, spawn: Any
) -> None:
    """The consumer reads the DLQ topic's max.message.bytes at start (as its own principal:
    DESCRIBE_CONFIGS is granted by the bus policy) and fits letters to it; when an operator
    lowers it later, the broker's refusal (which also breaks an idempotent producer's sequence
    on that partition) makes it retry with a new producer and a smaller letter until one fits —
    the partition never stalls."""
    prefix, sink = f"t{unique}.", f"shrink_{unique}"
    topic = f"{prefix}{DataArrived.TYPE}"
    dlq = dlq_topic(topic)
    group = f"{prefix}mlcp-trainer"
    pipeline = infra.settings("pipeline")
    await create_topics(infra.admin, [topic, dlq], partitions=1)
    await set_topic_config(infra.admin, dlq, {"max.message.bytes": "200000"})
    port = free_port()
    app = spawn([APP, "consume"], as_trainer(infra, sink, prefix, MLCP_HTTP_PORT=str(port)), "app")
    await wait_ready(port, app)

    first = b"\xff" + b"x" * 300_000
    await produce_to(pipeline, topic, [(0, b"ds", first, [])])
    await wait_for(settled(infra.admin, group, topic), timeout=60, what="1st letter")
    await set_topic_config(infra.admin, dlq, {"max.message.bytes": "30000"})
    second = b"\xff" + b"y" * 100_000  # fits the limit read at start, not the new one
    good = sentinel(DataArrived.TYPE)
    records = [(0, b"ds", second, []), (0, b"ds", encode_event(good), [])]
    await produce_to(pipeline, topic, records)
    await wait_for(settled(infra.admin, group, topic), timeout=90, what="2nd letter")

    letters = await read_all(infra.admin, dlq)
    assert [dict(r.headers)["mlcp-dlq-offset"] for r in letters] == [b"0", b"1"]
    assert all(H_TRUNCATED in dict(r.headers) for r in letters)
    assert 30_000 < len(letters[0].value) + 1000 <= 200_000, "fitted to the limit read at start"
    assert len(letters[1].value) < 30_000, "fitted to the lowered limit"
    assert first.startswith(letters[0].value)
    assert second.startswith(letters[1].value)
    assert await fetchval(infra, f"SELECT count(*) FROM {sink}.ledger") == 1
    assert "could not read" not in app.output_text(), "the DLQ's limit was read, not assumed"


def settled(bus: Settings, group: str, topic: str) -> Callable[[], Awaitable[bool]]:
    """A predicate: ``group`` has committed every record of ``topic``."""

    async def check() -> bool:
        return (await lags(bus, group, [topic]))[topic] == 0

    return check
