"""The result format every benchmark shares, so that `make bench` (bench/run.py) prints one table.

Each benchmark script under bench/ keeps its own detailed table and, in addition:

* accepts ``--quick`` (small sizes; the whole quick suite must stay under 5 minutes) and
  ``--json PATH`` (write its headline rows there as a JSON list of :class:`Measure`);
* builds its headline rows with :func:`measure` and hands them to :func:`finish`, which prints
  them and writes the JSON file when asked.

Ratios are "how many times better mlcp is than the anchor or floor": for throughputs
mlcp / anchor, for latencies anchor / mlcp. A floor (raw aiokafka) is a ceiling mlcp cannot beat,
so its ratio is a fraction (ingest ≥ 0.5 × raw consume).

It also holds the plumbing the benchmarks share: where the servers are and how to reach the
authenticated bus as each principal (``servers``, ``bus``, ``prepare_bus``, ``bench_topic``,
``drop_topics``; the comment above ``Servers`` says how credentials are given), services as
child processes (``Service``), and sending and watching events as their owners would
(``Publisher``, ``as_owner``, ``Watcher``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

    from mlcp.contracts import CloudEvent
    from mlcp.runtime.settings import Settings

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Measure:
    key: str  # stable id, e.g. "alias_lookup"
    measure: str  # the row label of issue 9's table
    mlcp: float
    unit: str  # "ms", "events/s", "req/s", ...
    better: Better  # which direction is better for this quantity
    workload: str  # sizes, repetitions, concurrency: enough to reproduce it
    anchor: float | None = None  # the same quantity for the anchor or floor, same run
    anchor_name: str | None = None  # "MLflow 3.x on the same PostgreSQL", "raw aiokafka", ...
    ratio: float | None = None  # mlcp is this many times better (see module doc)
    target: str | None = None  # human text, e.g. "≥ 5× MLflow and p99 < 10 ms"
    met: bool | None = None  # whether the target is met in this run (None: no target)
    extra: dict[str, float] | None = None  # secondary figures (p50, p99, ...)
    note: str | None = None  # a short secondary figure shown beside mlcp's, e.g. "p99 2.1 ms"
    error: str | None = None  # set by bench/run.py when the benchmark crashed (no figures)


def ratio(mlcp: float, anchor: float | None, better: Better) -> float | None:
    if anchor is None or anchor <= 0 or mlcp <= 0:
        return None
    return mlcp / anchor if better == "higher" else anchor / mlcp


def measure(
    key: str,
    label: str,
    mlcp: float,
    unit: str,
    better: Better,
    workload: str,
    *,
    anchor: float | None = None,
    anchor_name: str | None = None,
    target: str | None = None,
    met: bool | None = None,
    extra: dict[str, float] | None = None,
    note: str | None = None,
) -> Measure:
    return Measure(
        key=key,
        measure=label,
        mlcp=mlcp,
        unit=unit,
        better=better,
        workload=workload,
        anchor=anchor,
        anchor_name=anchor_name,
        ratio=ratio(mlcp, anchor, better),
        target=target,
        met=met,
        extra=extra,
        note=note,
    )


def latency(
    key: str,
    label: str,
    samples_ms: Sequence[float],
    workload: str,
    *,
    target_ms: float | None = None,
    target: str | None = None,
    note: str | None = None,
    extra: dict[str, float] | None = None,
) -> Measure:
    """A p95 latency row (lower is better) with its p50 beside it and in ``extra``."""
    p95, p50 = percentile(samples_ms, 95), statistics.median(samples_ms)
    if target_ms is not None and target is None:
        target = f"p95 ≤ {target_ms:.0f} ms"
    return measure(
        key,
        label,
        p95,
        "ms",
        "lower",
        workload,
        target=target,
        met=None if target_ms is None else p95 <= target_ms,
        note=note or f"p50 {p50:.0f} ms",
        extra={"p50_ms": p50, **(extra or {})},
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Inclusive percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return ordered[-1] if q >= 100 else ordered[0] if q <= 0 else cuts[round(q) - 1]


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes (part of a < 5 min run)")
    parser.add_argument("--json", type=Path, default=None, help="write the headline rows here")


def cli(doc: str, main: Callable[[bool, Path | None], Awaitable[None]]) -> None:
    """A benchmark's command line: ``--quick`` and ``--json PATH``, then ``main(quick, json)``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args()

    async def run() -> None:
        # SIGTERM (the runner stopping us) cancels the benchmark, so that its `finally` blocks
        # still stop the services and drop the schemas and topics.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await main(args.quick, args.json)

    asyncio.run(run())


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def render_markdown(rows: Sequence[Measure]) -> str:
    lines = [
        "| measure | mlcp | anchor or floor (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error is not None:
            lines.append(f"| {r.measure} | **error**: {r.error} | — | — | {r.target or '—'} | — |")
            continue
        anchor = f"{_fmt(r.anchor)} {r.unit} ({r.anchor_name})" if r.anchor is not None else "—"
        ratio_text = f"{r.ratio:.2f}×" if r.ratio is not None else "—"
        met = "—" if r.met is None else "yes" if r.met else "**no**"
        mlcp = f"{_fmt(r.mlcp)} {r.unit}" + (f"; {r.note}" if r.note else "")
        lines.append(
            f"| {r.measure} | {mlcp} | {anchor} | {ratio_text} | {r.target or '—'} | {met} |"
        )
    return "\n".join(lines)


def finish(rows: Sequence[Measure], json_path: Path | None) -> None:
    """Print the headline rows; write them as JSON when the runner asked for it."""
    print()
    print(render_markdown(rows))
    for r in rows:
        print(f"  {r.key}: {r.workload}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")


# --- Where the servers are, and who each benchmark is on the bus --------------------------------
#
# The bus is authenticated (SASL/SCRAM-SHA-512) and authorised (deny by default, ACLs from
# mlcp/policy/acls.yaml): a benchmark reaches it as the principal whose role it plays, exactly as
# the product's own clients do. A service process runs as ``svc-<service>``; what a benchmark
# injects on a service's topic it sends as that service, with that service's CloudEvents source
# (consumers dead-letter an event from any other source); DataArrived goes as ``pipeline``,
# PredictionLogged as ``inference``; the benchmark's watchers read as ``operator`` (reads
# everything, writes nothing); topics, ACLs and lag are chores of ``admin``.
#
# Which servers, and the credentials:
# * default — the dev stack of this environment (``mlcp-dev up``; its MLCP_STATE_DIR and
#   MLCP_DEV_*_PORT variables move it): its SASL_PLAINTEXT listener and the password file of
#   each principal in its state dir;
# * servers of one's own — MLCP_KAFKA_BOOTSTRAP and MLCP_DATABASE_URL, with
#   MLCP_BENCH_CREDENTIALS_DIR: a directory with one password file per principal (the layout
#   the dev stack and `mlcp bus init DIR` use; the principals need the SCRAM-SHA-512 users and
#   the ACL file applied, which `mlcp bus init` does). MLCP_KAFKA_SECURITY_PROTOCOL=SASL_SSL
#   (with MLCP_KAFKA_CA_FILE) for a TLS listener, PLAINTEXT for a bus without authentication
#   (then no ACLs are applied and no credentials are needed).

ROOT = Path(__file__).resolve().parents[1]
CREDENTIALS_VAR = "MLCP_BENCH_CREDENTIALS_DIR"


@dataclass(frozen=True)
class Servers:
    """Kafka and PostgreSQL for the benchmarks, and how to reach Kafka as each principal."""

    bootstrap: str
    database_url: str
    dev_stack: bool  # the dev stack of this environment (else MLCP_KAFKA_BOOTSTRAP's servers)
    protocol: str = "SASL_PLAINTEXT"  # of ``bootstrap``
    credentials: Path | None = None  # one password file per principal
    ca_file: Path | None = None  # the CA of the brokers' certificates (SASL_SSL)

    @property
    def authenticated(self) -> bool:
        return self.protocol.startswith("SASL_")

    def env(self, principal: str) -> dict[str, str]:
        """The MLCP_* variables of a process that acts as ``principal``: the servers and the
        principal's password file (never the password itself)."""
        protocol = self.protocol
        env = {
            "MLCP_KAFKA_BOOTSTRAP": self.bootstrap,
            "MLCP_DATABASE_URL": self.database_url,
            "MLCP_KAFKA_SECURITY_PROTOCOL": protocol,
        }
        if protocol.startswith("SASL_"):
            if self.credentials is None:
                raise SystemExit(credentials_hint(self))
            env |= {
                "MLCP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "MLCP_KAFKA_USERNAME": principal,
                "MLCP_KAFKA_PASSWORD_FILE": str(self.credentials / principal),
            }
        if protocol.endswith("SSL") and self.ca_file is not None:
            env["MLCP_KAFKA_CA_FILE"] = str(self.ca_file)
        return env


def credentials_hint(where: Servers) -> str:
    """How to give the benchmarks the bus credentials they lack (for error messages)."""
    from mlcp.policy.acl import load_policy

    if where.dev_stack:
        return (
            f"the dev stack's credentials ({where.credentials}) are missing or do not match its "
            "broker: run `uv run mlcp-dev up` (it creates every principal and its password "
            "file; `uv run mlcp-dev reset` starts a stack anew)"
        )
    folder = (
        f"{CREDENTIALS_VAR} to a directory with one password file per principal "
        f"({', '.join(load_policy().principals)}; each file's first line is that principal's "
        "password on this cluster: the layout of `mlcp bus init DIR`)"
    )
    if not where.authenticated:
        return (
            f"the bus at {where.bootstrap} wants SASL: set MLCP_KAFKA_SECURITY_PROTOCOL="
            f"SASL_PLAINTEXT (SASL_SSL with MLCP_KAFKA_CA_FILE for TLS) and {folder}"
        )
    return (
        f"MLCP_KAFKA_BOOTSTRAP={where.bootstrap} is an authenticated bus "
        f"(MLCP_KAFKA_SECURITY_PROTOCOL={where.protocol}): set {folder}, MLCP_KAFKA_CA_FILE "
        "for SASL_SSL, or MLCP_KAFKA_SECURITY_PROTOCOL=PLAINTEXT for a bus without "
        "authentication"
    )


@functools.cache
def servers() -> Servers:
    """The servers of this run (see the comment above), resolved once."""
    from mlcp.devstack import DevstackError, current

    try:
        stack = current()
    except DevstackError as error:
        raise SystemExit(str(error)) from None
    if not stack.kafka_external:
        return Servers(
            stack.bootstrap,
            stack.database_url,
            dev_stack=True,
            credentials=stack.credentials_dir,
        )
    protocol = os.environ.get("MLCP_KAFKA_SECURITY_PROTOCOL", "").strip() or "SASL_PLAINTEXT"
    folder = os.environ.get(CREDENTIALS_VAR, "").strip()
    ca = os.environ.get("MLCP_KAFKA_CA_FILE", "").strip()
    return Servers(
        stack.bootstrap,
        stack.database_url,
        dev_stack=False,
        protocol=protocol,
        credentials=Path(folder).expanduser() if folder else None,
        ca_file=Path(ca).expanduser() if ca else None,
    )


def bus(principal: str = "admin", prefix: str = "", **overrides: Any) -> Settings:
    """``mlcp.runtime`` Settings of ``principal`` behind the topic ``prefix`` (``overrides``:
    any other setting, e.g. ``db_schema``)."""
    from mlcp.runtime.settings import settings_from_env

    return settings_from_env(servers().env(principal), topic_prefix=prefix, **overrides)


def owner(event_type: str) -> tuple[str, str | None]:
    """(the principal that writes ``event_type``'s topic, the CloudEvents source its consumers
    require — None when they accept any: pipelines and inference services name themselves)."""
    from mlcp.policy.acl import SERVICE_SOURCE_PREFIX, load_policy

    policy = load_policy()
    principal = policy.topics[event_type].write[0]
    service = policy.service_of(principal)
    return principal, None if service is None else f"{SERVICE_SOURCE_PREFIX}{service}"


def as_owner(data: Any, *, source: str = "bench", **fields: Any) -> CloudEvent[Any]:
    """A new CloudEvent of ``data`` with the source its topic's consumers accept (``source``
    where any is accepted)."""
    from mlcp.contracts import new_event

    return new_event(data, source=owner(data.TYPE)[1] or source, **fields)


_PREPARED: set[str] = set()


async def prepare_bus(prefix: str) -> None:
    """As admin, every topic of the ACL file (and its dead-letter topic) behind ``prefix`` and,
    on an authenticated bus, their ACLs, in force on return. Services start on a prefix only
    after this (they may not create topics); ``drop_topics`` undoes it."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from mlcp.policy.acl import load_policy
    from mlcp.runtime.bus import apply
    from mlcp.runtime.kafka import make_admin

    policy = load_policy()
    if servers().authenticated:
        await apply(bus("admin"), policy, prefix=prefix)
    else:  # no authorizer: topics only
        admin = make_admin(bus("admin"))
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [NewTopic(t, 3, 1) for t in policy.topic_names(prefix) if t not in existing]
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
        finally:
            await admin.close()
    _PREPARED.add(prefix)


async def bench_topic(
    name: str,
    partitions: int,
    *,
    writers: Sequence[str] = (),
    readers: Sequence[str] = (),
    admin: Settings | None = None,
) -> None:
    """A topic of the benchmark's own (not in the ACL file, e.g. a raw floor's), created as
    ``admin`` (default: the servers' admin); on an authenticated bus ``writers`` may write it
    and ``readers`` read it without a consumer group, once this returns. ``drop_topics`` of its
    prefix removes both."""
    from aiokafka.admin import NewTopic

    from mlcp.policy.acl import AclBinding
    from mlcp.runtime.kafka import make_admin
    from mlcp.runtime.kafka_admin import create_acls, describe_acls

    settings = admin or bus("admin")
    client = make_admin(settings)
    await client.start()
    try:
        await client.create_topics([NewTopic(name, partitions, 1)])
        if not settings.kafka_security_protocol.startswith("SASL_"):
            return
        wanted = {AclBinding("topic", name, f"User:{who}", "WRITE") for who in writers}
        wanted |= {AclBinding("topic", name, f"User:{who}", "READ") for who in readers}
        await create_acls(client, sorted(wanted))
        # The broker's authorizer loads ACLs from the metadata log a moment after the
        # controller commits them: wait until it shows them (as `mlcp bus apply` does).
        deadline = time.monotonic() + 15
        while not wanted <= set(await describe_acls(client)):
            if time.monotonic() > deadline:
                raise SystemExit(f"the ACLs of {name} were not in force after 15 s")
            await asyncio.sleep(0.1)
    finally:
        await client.close()


# --- Shared plumbing of the benchmarks that run services as processes --------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(popen: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    """SIGTERM a child (a clean stop), SIGKILL it if it is still there after ``timeout``."""
    if popen is None or popen.poll() is not None:
        return
    popen.terminate()
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()


@dataclass
class Service:
    """``python -m mlcp.<name>`` as a child process, its output in ``log``, on a free port, on
    the bus as its own principal ``svc-<name>`` (its topic prefix prepared first)."""

    name: str
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        prefix = self.env.get("MLCP_TOPIC_PREFIX", "")
        if prefix not in _PREPARED:
            raise RuntimeError(f"prepare_bus({prefix!r}) first: services may not create topics")
        # The benchmark's own bus identity (if any in its environment) is not the service's.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("MLCP_KAFKA_")}
        env = {
            **inherited,
            **servers().env(f"svc-{self.name}"),
            **self.env,
            "MLCP_HTTP_PORT": str(self.port),
        }
        env.setdefault("MLCP_LOG_LEVEL", "WARNING")
        if self.name == "registry":
            from mlcp.cli.up import dev_audit_key  # the audit keyring `mlcp up` would use

            env.update(dev_audit_key(env))
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", f"mlcp.{self.name}"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        return self

    async def ready(self, timeout: float = 180.0) -> None:
        """Wait for /readyz (joined its consumer groups); fail with the log's tail if it died."""
        import httpx  # the runner imports this module too and needs none of it

        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                assert self.popen is not None
                if self.popen.poll() is not None:
                    code = self.popen.returncode
                    raise SystemExit(f"{self.name} exited ({code}):\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    url = f"http://127.0.0.1:{self.port}/readyz"
                    if (await client.get(url, timeout=2)).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise SystemExit(f"{self.name} not ready after {timeout:.0f}s:\n{self.tail()}")

    def stop(self) -> None:
        stop_process(self.popen)

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


async def drop_schemas(*schemas: str) -> None:
    """Leave the shared database as it was: the benchmarks' schemas are throwaway."""
    import asyncpg

    conn = await asyncpg.connect(servers().database_url)
    try:
        for schema in schemas:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


async def drop_topics(prefix: str) -> None:
    """Delete every topic named ``prefix…`` and every ACL on a topic or group named so (the ACL
    file's, ``mlcp.runtime.bus.remove_prefix``, and ``bench_topic``'s): a shared broker with
    thousands of leftover partitions and ACLs gets slow for everyone."""
    from mlcp.runtime.kafka import make_admin
    from mlcp.runtime.kafka_admin import delete_acls, describe_acls

    admin = make_admin(bus("admin"))
    try:
        await admin.start()
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
        if servers().authenticated:
            acls = [b for b in await describe_acls(admin) if b.resource_name.startswith(prefix)]
            if acls:
                await delete_acls(admin, acls)
    except Exception as error:  # cleanup must not turn a finished run into a crash
        print(f"warning: could not delete the {prefix}* topics and ACLs: {error}", file=sys.stderr)
    finally:
        await admin.close()
    _PREPARED.discard(prefix)


async def cleanup(prefix: str, *schemas: str) -> None:
    await drop_schemas(*schemas)
    await drop_topics(prefix)


class Publisher:
    """Publishes events on a prefix's topics as their owners would: each through a durable
    producer (acks=all, idempotent) of the principal that may write its topic, started at its
    first use. Build the events with ``as_owner`` (the source the consumers accept)."""

    def __init__(self, prefix: str, **producer_options: Any) -> None:
        self.prefix = prefix
        self._options = producer_options
        self._producers: dict[str, AIOKafkaProducer] = {}  # principal → started AIOKafkaProducer

    async def producer(self, event_type: str) -> AIOKafkaProducer:
        """The started producer of ``event_type``'s owner."""
        from mlcp.runtime.kafka import durable_producer

        principal = owner(event_type)[0]
        if principal not in self._producers:
            made = durable_producer(bus(principal), client_id=f"bench-{principal}", **self._options)
            await made.start()
            self._producers[principal] = made
        return self._producers[principal]

    async def send(self, event: CloudEvent[Any], key: bytes | None = None) -> float:
        """Send ``event`` and wait for its acks; returns when the send began (perf_counter)."""
        from mlcp.contracts import encode_event

        producer = await self.producer(event.type)
        started = time.perf_counter()
        await producer.send_and_wait(self.prefix + event.type, encode_event(event), key=key)
        return started

    async def close(self) -> None:
        producers, self._producers = list(self._producers.values()), {}
        for producer in producers:
            await producer.stop()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


class Watcher:
    """Reads the given topics from their start (no consumer group) and hands out decoded events.

    ``expect`` waits for the first not-yet-seen event of a type that matches a predicate and
    records when this process received it (``perf_counter``), so latencies share one clock with
    the sends. ``settings``: the reader's (``bus("operator", prefix)``); the topics must exist
    (``prepare_bus``).
    """

    def __init__(self, settings: Settings, topics: dict[str, str]) -> None:
        from mlcp.runtime.kafka import make_consumer

        self._types = {topic: type_ for type_, topic in topics.items()}
        self.consumer = make_consumer(settings, *topics.values(), auto_offset_reset="earliest")
        self.seen: list[tuple[float, Any]] = []  # (received perf_counter, event)
        self._used: set[str] = set()

    async def __aenter__(self) -> Watcher:
        await self.consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()

    async def expect(
        self, type_: str, match: Any = None, timeout: float = 60.0
    ) -> tuple[float, Any]:
        """(received at, event): the first unused event of ``type_`` for which ``match`` holds."""
        from mlcp.contracts import decode_event

        deadline = time.monotonic() + timeout
        while True:
            for received, event in self.seen:
                if (
                    event.type == type_
                    and event.id not in self._used
                    and (match is None or match(event.data))
                ):
                    self._used.add(event.id)
                    return received, event
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"timed out after {timeout:.0f}s waiting for {type_}")
            batch = await self.consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000) + 1)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    self.seen.append(
                        (now, decode_event(record.value, expected_type=self._types[record.topic]))
                    )
