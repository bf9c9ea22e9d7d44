"""``mlcp dlq``: look at dead-lettered records and replay them to their topic.

Every consumer sends a record it cannot apply to ``<topic>.dlq`` (``mlcp.runtime.dlq``): the
original key, bytes and headers, plus ``mlcp-dlq-*`` headers saying why. ``list`` reads every
dead-letter topic from the beginning without joining a consumer group (nothing is committed,
no group's offsets move); ``replay`` re-publishes the original record to its topic.

A letter too large for its topic is *truncated* (``mlcp-dlq-truncated``): it keeps a prefix of
the original bytes, their size and SHA-256, and where the original is. ``list`` marks it;
``replay`` reads the original from its topic, partition and offset (while retention keeps it),
checks its SHA-256, and replays that — or refuses, saying why.

The Kafka clients and the settings are imported inside the functions: ``mlcp --help`` and the
registry commands import this module and need none of them.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import dataclasses
import hashlib
import json
import logging
import unicodedata
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from mlcp.runtime.settings import Settings

DLQ_HEADER_PREFIX = "mlcp-dlq-"
PREVIEW_CHARS = 60
ERROR_CHARS = 60
# A DLQ record can carry up to the producer's 2 MiB; fetch a whole one in a single response.
MAX_FETCH_BYTES = 4 * 1024 * 1024
REFUSED, USAGE, UNREACHABLE = 1, 2, 3

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False)

dlq_app = typer.Typer(
    help="Dead-lettered records: what could not be applied, why, and replaying them. "
    "Kafka from MLCP_KAFKA_BOOTSTRAP, topics behind MLCP_TOPIC_PREFIX. Exit codes: 0 ok, "
    "1 refused or not found, 2 usage or configuration, 3 Kafka unreachable.",
    no_args_is_help=True,
)


class DlqError(Exception):
    """A refusal or failure to report as one line on stderr with ``exit_code``."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# --- pure helpers: safe rendering of untrusted bytes ---------------------------------------


def safe_text(text: str, limit: int | None = None) -> str:
    """``text`` on one line: control and invisible format characters escaped (``\\n``,
    ``\\x1b``, ``\\u202e``) so a record cannot move the cursor or reorder the terminal; cut
    at ``limit`` characters with an ellipsis."""
    pieces: list[str] = []
    size = 0
    for ch in text:
        category = unicodedata.category(ch)
        risky = category in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")
        piece = ch.encode("unicode_escape").decode("ascii") if risky else ch
        if limit is not None and size + len(piece) > limit:
            pieces.append("…")
            break
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces)


def _looks_binary(text: str) -> bool:
    # UTF-8 that is mostly control characters (NULs, escapes) is a binary blob, not text.
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t")
    return controls * 10 > len(text)


def preview(data: bytes | None, limit: int = PREVIEW_CHARS) -> str:
    """A short, terminal-safe look at a record's bytes: escaped text, or a hex head for
    binary; the size is appended when the bytes do not fit."""
    if data is None:
        return "(null)"
    if not data:
        return "(empty)"
    # Decode only the head: up to 4 bytes per character, the incremental decoder keeps a
    # multi-byte character cut by the slice out of the text instead of failing on it.
    head = data[: limit * 4 + 4]
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) == len(data))
    except UnicodeDecodeError:
        text = None
    if text is None or _looks_binary(text):
        more = " …" if len(data) > 16 else ""
        return f"binary {len(data)} B: {data[:16].hex(' ')}{more}"
    shown = safe_text(text, limit)
    if len(head) < len(data) and not shown.endswith("…"):
        shown += "…"
    return shown if not shown.endswith("…") else f"{shown} ({len(data)} B)"


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Letter:
    """One record of a dead-letter topic."""

    dlq_topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_record(cls, record: Any) -> Letter:
        """From an aiokafka ``ConsumerRecord``."""
        return cls(
            dlq_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
            key=record.key,
            value=record.value,
            headers=tuple((str(k), bytes(v or b"")) for k, v in (record.headers or ())),
        )

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` as text (undecodable bytes replaced)."""
        values = [v for k, v in self.headers if k == name]
        return values[-1].decode("utf-8", errors="replace") if values else None

    @property
    def reason(self) -> str:
        return self.header("mlcp-dlq-reason") or "(none)"

    @property
    def error(self) -> str:
        return self.header("mlcp-dlq-error") or ""

    @property
    def source_topic(self) -> str | None:
        """The topic the record was consumed from (where a replay sends it)."""
        return self.header("mlcp-dlq-topic") or None

    @property
    def consumer(self) -> str:
        return self.header("mlcp-dlq-consumer") or "?"

    @property
    def dead_lettered_ms(self) -> int:
        """When it was dead-lettered (the header; else the DLQ record's timestamp)."""
        return _int(self.header("mlcp-dlq-time-ms")) or self.timestamp_ms

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        """The record's own headers: what a replay sends, without the ``mlcp-dlq-*`` ones."""
        return [(k, v) for k, v in self.headers if not k.startswith(DLQ_HEADER_PREFIX)]

    @property
    def where(self) -> str:
        return f"{self.partition}@{self.offset}"

    @property
    def truncated(self) -> bool:
        """The letter keeps only a prefix of the original value (it was too large for the DLQ)."""
        return self.header("mlcp-dlq-truncated") is not None

    @property
    def original_bytes(self) -> int | None:
        """Size of the original value (``mlcp-dlq-value-bytes``; older letters: unknown)."""
        return _int(self.header("mlcp-dlq-value-bytes"))

    @property
    def sha256(self) -> str | None:
        """Hex SHA-256 of the original value (``mlcp-dlq-sha256``; older letters: none)."""
        return self.header("mlcp-dlq-sha256")

    @property
    def origin(self) -> tuple[str, int, int] | None:
        """(topic, partition, offset) of the original record, when the headers say it."""
        partition = _int(self.header("mlcp-dlq-partition"))
        offset = _int(self.header("mlcp-dlq-offset"))
        if self.source_topic is None or partition is None or offset is None:
            return None
        return self.source_topic, partition, offset

    def event(self) -> dict[str, str] | None:
        """The CloudEvents id and type when the original bytes are a JSON envelope."""
        try:
            obj = json.loads(self.value or b"")
        except (ValueError, RecursionError):
            return None
        if not isinstance(obj, dict):
            return None
        event_id, event_type = obj.get("id"), obj.get("type")
        if not isinstance(event_id, str) or not isinstance(event_type, str):
            return None
        return {"id": event_id, "type": event_type}

    def describe(self) -> str:
        """The event's type and id, else a preview of the bytes; terminal-safe. A truncated
        letter says so first, with how much of the original it keeps."""
        if self.truncated:
            total = "?" if self.original_bytes is None else f"{self.original_bytes:,}"
            kept = f"{len(self.value or b''):,}"
            return f"TRUNCATED: {kept} of {total} B kept; {preview(self.value)}"
        event = self.event()
        if event is None:
            return preview(self.value)
        short = event["type"].removeprefix("mlcp.")
        return safe_text(f"{short} {event['id']}", PREVIEW_CHARS)

    def to_json(self) -> dict[str, Any]:
        """Everything about the record, bytes as base64 beside a utf-8 preview (``--json``)."""
        return {
            "dlq_topic": self.dlq_topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "reason": self.header("mlcp-dlq-reason"),
            "error": self.header("mlcp-dlq-error"),
            "consumer": self.header("mlcp-dlq-consumer"),
            "attempts": _int(self.header("mlcp-dlq-attempts")),
            "dead_lettered_at": _iso(_int(self.header("mlcp-dlq-time-ms"))),
            "original": {
                "topic": self.source_topic,
                "partition": _int(self.header("mlcp-dlq-partition")),
                "offset": _int(self.header("mlcp-dlq-offset")),
            },
            "event": self.event(),
            "key": {"base64": _b64(self.key), "preview": preview(self.key)},
            "truncated": self.truncated,
            "value": {
                "base64": _b64(self.value),
                "preview": preview(self.value),
                "bytes": None if self.value is None else len(self.value),
                "original_bytes": self.original_bytes,
                "sha256": self.sha256,
            },
            "headers": [
                {"name": k, "base64": _b64(v), "preview": preview(v)}
                for k, v in self.original_headers
            ],
        }


def matches(letter: Letter, topic: str | None, reason: str | None) -> bool:
    """``--topic`` is a substring of the DLQ topic; ``--reason`` is exact."""
    if topic is not None and topic not in letter.dlq_topic:
        return False
    return reason is None or letter.reason == reason


def dlq_topics(prefix: str) -> list[str]:
    """Every dead-letter topic of the catalog behind ``prefix``."""
    from mlcp.contracts import ALL_TOPICS, dlq_topic

    return [f"{prefix}{dlq_topic(t)}" for t in ALL_TOPICS]


def resolve_topic(name: str, prefix: str) -> str:
    """The DLQ topic ``name`` names: as ``list`` prints it, or without the prefix."""
    known = dlq_topics(prefix)
    for candidate in (name, f"{prefix}{name}"):
        if candidate in known:
            return candidate
    raise DlqError(
        f"{name} is not an mlcp dead-letter topic (expected <prefix>mlcp.<…>.v1.dlq "
        f"with prefix {prefix!r}; 'mlcp dlq list' shows them)",
        REFUSED,
    )


def with_original(letter: Letter, original: Letter) -> Letter:
    """``letter`` carrying the record it was truncated from (read back from its topic): the
    original key, bytes and headers; refuses a record whose SHA-256 is not the letter's."""
    digest = hashlib.sha256(original.value or b"").hexdigest()
    if letter.sha256 is None or digest != letter.sha256:
        topic, partition, offset = letter.origin or ("?", -1, -1)
        raise DlqError(
            f"{letter.dlq_topic} {letter.where} is truncated, and the record now at {topic} "
            f"{partition}@{offset} is not its original (SHA-256 differs): not replayed",
            REFUSED,
        )
    dlq_headers = tuple(
        (k, v)
        for k, v in letter.headers
        if k.startswith(DLQ_HEADER_PREFIX) and k != "mlcp-dlq-truncated"
    )
    return dataclasses.replace(
        letter,
        key=original.key,
        value=original.value,
        headers=tuple(original.original_headers) + dlq_headers,
    )


async def untruncate(settings: Settings, letter: Letter, timeout: float) -> Letter:
    """The truncated ``letter`` with its original record, read from where it was consumed;
    refuses (REFUSED) when that offset can no longer be read."""
    origin = letter.origin
    kept = f"kept {len(letter.value or b''):,} of {letter.original_bytes or '?'} bytes"
    if origin is None:
        raise DlqError(
            f"{letter.dlq_topic} {letter.where} is truncated ({kept}) and does not say where "
            "its original is: not replayable",
            REFUSED,
        )
    topic, partition, offset = origin
    try:
        original = await fetch_one(settings, topic, partition, offset, timeout)
    except DlqError as exc:
        if exc.exit_code != REFUSED:
            raise
        raise DlqError(
            f"{letter.dlq_topic} {letter.where} is truncated ({kept}) and its original at "
            f"{topic} {partition}@{offset} can no longer be read ({exc.message}): not replayable",
            REFUSED,
        ) from None
    return with_original(letter, original)


def replay_target(letter: Letter) -> str:
    """The topic a replay publishes to; refuses records that do not say it or contradict
    the DLQ they are in (a forged header must not send bytes to an arbitrary topic)."""
    target = letter.source_topic
    at = f"{letter.dlq_topic} {letter.where}"
    if target is None:
        raise DlqError(f"{at} has no mlcp-dlq-topic header: not replayable", REFUSED)
    if f"{target}.dlq" != letter.dlq_topic:
        raise DlqError(
            f"{at} says it came from {safe_text(target, 200)}, not from its DLQ's topic: "
            "not replayed",
            REFUSED,
        )
    return target


# --- Kafka ----------------------------------------------------------------------------------


def _unreachable(bootstrap: str, exc: BaseException, timeout: float) -> DlqError:
    detail = str(exc) or f"no answer in {timeout:g}s"
    return DlqError(f"Kafka at {bootstrap} unreachable: {detail}", UNREACHABLE)


async def _refusal(settings: Settings, timeout: float) -> DlqError | None:
    """A ``DlqError(USAGE)`` when the brokers refuse these credentials or this CA."""
    from mlcp.runtime.kafka import BusAccessError, check_access

    try:
        await check_access(settings, timeout_s=min(timeout, 10.0))
    except BusAccessError as exc:
        return DlqError(str(exc), USAGE)
    except Exception:  # unreachable: the caller's own message says so
        return None
    return None


async def _stop_quietly(client: Any) -> None:
    # Stopping a client that never connected must not replace the real error.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await client.stop()


@contextlib.asynccontextmanager
async def _reader(settings: Settings, timeout: float) -> AsyncIterator[Any]:
    """A consumer outside any group (assign + seek: nothing committed), started within
    ``timeout``; Kafka errors inside become ``DlqError(UNREACHABLE)``."""
    from aiokafka.errors import KafkaError

    from mlcp.runtime.kafka import make_consumer

    consumer = make_consumer(
        settings,
        client_id="mlcp-cli-dlq",
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=MAX_FETCH_BYTES,
        fetch_max_bytes=MAX_FETCH_BYTES * 4,
        request_timeout_ms=max(int(timeout * 1000), 1000),
    )
    try:
        async with asyncio.timeout(timeout):
            await consumer.start()
        yield consumer
    except (KafkaError, OSError, TimeoutError) as exc:
        refused = await _refusal(settings, timeout)
        raise refused or _unreachable(settings.kafka_bootstrap, exc, timeout) from None
    finally:
        await _stop_quietly(consumer)


async def _partitions(consumer: Any, topics: Iterable[str], timeout: float) -> list[Any]:
    """The partitions of the existing ``topics`` (offset look-ups on a missing one hang)."""
    from aiokafka import TopicPartition

    async with asyncio.timeout(timeout):
        cluster = await consumer._client.fetch_all_metadata()
    existing = cluster.topics()
    return [
        TopicPartition(t, p)
        for t in topics
        if t in existing
        for p in sorted(cluster.partitions_for_topic(t) or ())
    ]


async def scan(
    settings: Settings, topics: list[str], visit: Callable[[Letter], None], *, timeout: float
) -> int:
    """Call ``visit`` for every record of ``topics`` (oldest first per partition) up to the
    end offsets seen at the start; returns how many DLQ topics exist. Fails if reading makes
    no progress for ``timeout`` seconds."""
    async with _reader(settings, timeout) as consumer:
        tps = await _partitions(consumer, topics, timeout)
        if not tps:
            return 0
        consumer.assign(tps)
        async with asyncio.timeout(timeout):
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        loop = asyncio.get_running_loop()
        stalled_at = loop.time() + timeout
        while pending:
            if loop.time() > stalled_at:
                raise TimeoutError(f"reading the DLQ made no progress in {timeout:g}s")
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:  # later arrivals are not in this snapshot
                        visit(Letter.from_record(record))
                stalled_at = loop.time() + timeout
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return len({tp.topic for tp in tps})


async def fetch_one(
    settings: Settings, topic: str, partition: int, offset: int, timeout: float
) -> Letter:
    """The record at ``topic`` ``partition``@``offset``; refuses one that does not exist."""
    from aiokafka import TopicPartition

    tp = TopicPartition(topic, partition)
    async with _reader(settings, timeout) as consumer:
        known = await _partitions(consumer, [topic], timeout)
        if tp not in known:
            what = f"{len(known)} partitions" if known else "does not exist"
            raise DlqError(f"no partition {partition} in {topic} ({what})", REFUSED)
        consumer.assign([tp])
        async with asyncio.timeout(timeout):
            first = (await consumer.beginning_offsets([tp]))[tp]
            end = (await consumer.end_offsets([tp]))[tp]
        missing = DlqError(
            f"no record at {topic} {partition}@{offset} (the partition holds offsets "
            f"{first}..{end - 1})"
            if end > first
            else f"no record at {topic} {partition}@{offset} (the partition is empty)",
            REFUSED,
        )
        if not first <= offset < end:
            raise missing
        consumer.seek(tp, offset)
        async with asyncio.timeout(timeout):
            while await consumer.position(tp) <= offset:
                for record in (await consumer.getmany(tp, timeout_ms=200)).get(tp, []):
                    if record.offset == offset:
                        return Letter.from_record(record)
        # Compaction or a transaction marker left the offset without a record.
        raise missing


async def republish(settings: Settings, letters: list[Letter], timeout: float) -> list[str]:
    """Send each letter's original key, bytes and headers to its topic with acks=all and
    idempotence, in order; returns where each landed."""
    from aiokafka.errors import KafkaError

    from mlcp.runtime.kafka import durable_producer

    producer = durable_producer(
        settings, client_id="mlcp-cli-dlq", request_timeout_ms=max(int(timeout * 1000), 1000)
    )
    landed: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            await producer.start()
        for letter in letters:
            target = replay_target(letter)
            async with asyncio.timeout(timeout):
                meta = await producer.send_and_wait(
                    target, value=letter.value, key=letter.key, headers=letter.original_headers
                )
            landed.append(f"{meta.topic} {meta.partition}@{meta.offset}")
    except (KafkaError, OSError, TimeoutError) as exc:
        done = f" after replaying {len(landed)} of {len(letters)}" if landed else ""
        refused = await _refusal(settings, timeout)
        if refused is not None:
            raise refused from None
        failure = _unreachable(settings.kafka_bootstrap, exc, timeout)
        raise DlqError(failure.message + done, UNREACHABLE) from None
    finally:
        await _stop_quietly(producer)
    return landed


# --- commands -------------------------------------------------------------------------------


def _settings(principal: str) -> Settings:
    """Reading dead letters is the operator's; replaying them (writing any topic) the admin's."""
    from mlcp.cli.bus import cli_settings

    return cli_settings(principal)


def _run(body: Callable[[], None]) -> None:
    """Run a command body; a ``DlqError`` becomes one line on stderr and its exit code."""
    # aiokafka logs each failed connection attempt; the one-line error below says it all.
    kafka_log = logging.getLogger("aiokafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        body()
    except DlqError as exc:
        err.print(f"[bold red]error:[/] {escape(exc.message)}")
        raise typer.Exit(exc.exit_code) from None
    finally:
        kafka_log.setLevel(level)


def _tables(letters: Iterable[Letter], title: str) -> list[Table]:
    """One table per DLQ topic, titled with its full name (what ``replay`` takes)."""
    by_topic: dict[str, list[Letter]] = {}
    for letter in letters:
        by_topic.setdefault(letter.dlq_topic, []).append(letter)
    tables = []
    for topic, rows in by_topic.items():
        table = Table(title=f"{topic} — {title}", title_justify="left", highlight=False)
        for column in ("p@offset", "time (UTC)", "consumer", "reason"):
            table.add_column(column, no_wrap=True)
        table.add_column("error", overflow="fold", ratio=1)
        table.add_column("event / bytes", overflow="fold", ratio=1)
        for letter in rows:
            when = datetime.fromtimestamp(letter.dead_lettered_ms / 1000, UTC)
            table.add_row(
                Text(letter.where),
                Text(when.strftime("%m-%d %H:%M:%S")),
                Text(safe_text(letter.consumer, 20)),
                Text(safe_text(letter.reason, 24)),
                Text(safe_text(letter.error, ERROR_CHARS)),
                Text(letter.describe()),
            )
        tables.append(table)
    return tables


Timeout = Annotated[
    float,
    typer.Option(min=0.5, help="Seconds to wait for Kafka before giving up (exit 3)."),
]
TopicFilter = Annotated[
    str | None, typer.Option("--topic", help="Only DLQ topics containing this.")
]
ReasonFilter = Annotated[
    str | None, typer.Option(help="Only this mlcp-dlq-reason (e.g. invalid_data).")
]


@dlq_app.command("list")
def dlq_list(
    topic: TopicFilter = None,
    reason: ReasonFilter = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most the newest N records.")] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="Full records as JSON, bytes as base64 (scripts).")
    ] = False,
    timeout: Timeout = 10.0,
) -> None:
    """Every dead-lettered record of every mlcp topic (read from the beginning without joining
    a consumer group), then counts per DLQ topic and reason."""

    def body() -> None:
        settings = _settings("operator")
        shown: deque[Letter] = deque(maxlen=limit)
        counts: Counter[tuple[str, str]] = Counter()

        def visit(letter: Letter) -> None:
            if matches(letter, topic, reason):
                shown.append(letter)
                counts[(letter.dlq_topic, letter.reason)] += 1

        topics = dlq_topics(settings.topic_prefix)
        existing = asyncio.run(scan(settings, topics, visit, timeout=timeout))
        letters = sorted(shown, key=lambda lt: (lt.dlq_topic, lt.dead_lettered_ms, lt.offset))
        total = sum(counts.values())
        if as_json:
            summary = [{"dlq_topic": t, "reason": r, "count": n} for (t, r), n in counts.items()]
            document = {
                "matched": total,
                "shown": len(letters),
                "records": [letter.to_json() for letter in letters],
                "counts": sorted(summary, key=lambda row: (row["dlq_topic"], row["reason"])),
            }
            print(json.dumps(document, indent=2))
            return
        if not total:
            where = f"{existing} dead-letter topics" if existing else "no dead-letter topic yet"
            out.print(f"no dead-lettered records ({where}, prefix {settings.topic_prefix!r})")
            return
        for table in _tables(letters, "dead-lettered records, oldest first"):
            out.print(table)
        summary_table = Table(title="per topic and reason", title_justify="left")
        for column in ("dlq topic", "reason", "records"):
            summary_table.add_column(column, justify="right" if column == "records" else "left")
        for (dlq, why), count in sorted(counts.items()):
            summary_table.add_row(Text(dlq), Text(safe_text(why, 40)), str(count))
        out.print(summary_table)
        if total > len(letters):
            out.print(f"[dim]{total - len(letters)} older records not shown (--limit)[/]")
        if cut := sum(1 for letter in letters if letter.truncated):
            out.print(
                f"{cut} truncated letter(s) shown: too large for their DLQ, they keep a prefix; "
                "'replay' reads the original back from its topic while retention keeps it"
            )

    _run(body)


REPLAY_HELP = (
    "Re-publish dead-lettered records to the topic they came from: the ORIGINAL key, bytes "
    "and headers (without the mlcp-dlq-* ones), with acks=all and an idempotent producer."
    "\n\nReplay once the producer or the handler that refused the record is fixed — "
    "otherwise it lands in the DLQ again. Replaying an event that was already applied is "
    "harmless: each consumer's inbox drops a CloudEvents id it has seen. Shows what it will "
    "send and asks first (--yes skips the question, --dry-run only shows)."
    "\n\nA truncated letter (too large for its DLQ: it keeps a prefix) is replayed from its "
    "original, read back from the topic, partition and offset it names and checked against its "
    "SHA-256; once retention has deleted that record it cannot be replayed."
    "\n\nExit 1 if the record does not exist or does not name its topic (mlcp-dlq-topic), if "
    "a truncated letter's original can no longer be read, or if the replay is not confirmed; "
    "3 if Kafka is unreachable."
)


@dlq_app.command("replay", help=REPLAY_HELP)
def dlq_replay(
    dlq_topic: Annotated[
        str | None,
        typer.Argument(help="The DLQ topic as 'mlcp dlq list' prints it.", show_default=False),
    ] = None,
    partition: Annotated[
        int | None, typer.Argument(min=0, help="Its partition.", show_default=False)
    ] = None,
    offset: Annotated[
        int | None, typer.Argument(min=0, help="Its offset (list: partition@offset).")
    ] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Replay every record matching --topic/--reason.")
    ] = False,
    topic: TopicFilter = None,
    reason: ReasonFilter = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be replayed; send nothing.")
    ] = False,
    timeout: Timeout = 10.0,
) -> None:

    def body() -> None:
        given = [a for a in (dlq_topic, partition, offset) if a is not None]
        if len(given) not in (0, 3) or replay_all == (len(given) == 3):
            raise DlqError(
                "give either DLQ_TOPIC PARTITION OFFSET, or --all [--topic T] [--reason R]", USAGE
            )
        if given and (topic is not None or reason is not None):
            raise DlqError("--topic and --reason select records for --all only", USAGE)
        settings = _settings("admin")
        if dlq_topic is not None and partition is not None and offset is not None:
            name = resolve_topic(dlq_topic, settings.topic_prefix)
            letters = [asyncio.run(fetch_one(settings, name, partition, offset, timeout))]
        else:
            letters = []

            def visit(letter: Letter) -> None:
                if matches(letter, topic, reason):
                    letters.append(letter)

            topics = dlq_topics(settings.topic_prefix)
            asyncio.run(scan(settings, topics, visit, timeout=timeout))
            if not letters:
                out.print("no dead-lettered record matches: nothing to replay")
                return
        targets: list[str] = []
        replayable: list[Letter] = []
        truncated: set[int] = set()
        for letter in letters:
            try:
                target = replay_target(letter)
                if letter.truncated:
                    letter = asyncio.run(untruncate(settings, letter, timeout))
                    truncated.add(len(replayable))
                targets.append(target)
                replayable.append(letter)
            except DlqError as exc:
                if not replay_all:
                    raise
                # With --all, one unreplayable record must not hold back the others.
                err.print(f"[yellow]skipped:[/] {escape(exc.message)}")
        if not replayable:
            raise DlqError("no matching record can be replayed", REFUSED)
        letters = replayable
        for table in _tables(letters, "to replay"):
            out.print(table)
        for index, (letter, target) in enumerate(zip(letters, targets, strict=True)):
            names = ", ".join(k for k, _ in letter.original_headers) or "none"
            origin = letter.origin
            whence = (
                f" (the letter was truncated: the original, read back from {origin[0]} "
                f"{origin[1]}@{origin[2]})"
                if index in truncated and origin is not None
                else ""
            )
            out.print(
                Text(
                    f"{letter.dlq_topic} {letter.where} → {target}: key {preview(letter.key)}, "
                    f"{len(letter.value or b'')} B, headers {safe_text(names, 120)}{whence}"
                )
            )
        if dry_run:
            out.print("dry run: nothing sent")
            return
        if not yes:
            try:
                confirmed = typer.confirm(f"Replay {len(letters)} record(s)?", default=False)
            except typer.Abort:  # no answer (stdin closed) is a no
                confirmed = False
            if not confirmed:
                raise DlqError(
                    "not confirmed: nothing replayed (--yes skips the question)", REFUSED
                )
        landed = asyncio.run(republish(settings, letters, timeout))
        for letter, where in zip(letters, landed, strict=True):
            out.print(Text(f"replayed {letter.dlq_topic} {letter.where} → {where}"))

    _run(body)
