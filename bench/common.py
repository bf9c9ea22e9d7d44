"""The result format every benchmark shares, so that `make bench` (bench/run.py) prints one table.

Each benchmark script under bench/ keeps its own detailed table and, in addition:

* accepts ``--quick`` (small sizes; the whole quick suite must stay under 5 minutes) and
  ``--json PATH`` (write its headline rows there as a JSON list of :class:`Measure`);
* builds its headline rows with :func:`measure` and hands them to :func:`finish`, which prints
  them and writes the JSON file when asked.

Ratios are "how many times better mlcp is than the anchor or floor": for throughputs
mlcp / anchor, for latencies anchor / mlcp. A floor (raw aiokafka) is a ceiling mlcp cannot beat,
so its ratio is a fraction (ingest ≥ 0.5 × raw consume).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from typing import Any, Literal

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


# --- Shared plumbing of the benchmarks that run services as processes --------------------------

ROOT = Path(__file__).resolve().parents[1]
KAFKA = os.environ.get("MLCP_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
DATABASE = os.environ.get("MLCP_DATABASE_URL", "postgresql://mlcp:mlcp@127.0.0.1:55432/mlcp")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    """``python -m mlcp.<name>`` as a child process, its output in ``log``, on a free port."""

    name: str
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        env = {**os.environ, **self.env, "MLCP_HTTP_PORT": str(self.port)}
        env.setdefault("MLCP_KAFKA_BOOTSTRAP", KAFKA)
        env.setdefault("MLCP_DATABASE_URL", DATABASE)
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
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


async def drop_schemas(*schemas: str) -> None:
    """Leave the shared database as it was: the benchmarks' schemas are throwaway."""
    import asyncpg

    conn = await asyncpg.connect(DATABASE)
    try:
        for schema in schemas:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


async def drop_topics(prefix: str) -> None:
    """Delete every topic named ``prefix…`` (services create theirs and their DLQs at start):
    a shared broker with thousands of leftover partitions gets slow for everyone."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    except Exception as error:  # cleanup must not turn a finished run into a crash
        print(f"warning: could not delete the {prefix}* topics: {error}", file=sys.stderr)
    finally:
        await admin.close()


async def cleanup(prefix: str, *schemas: str) -> None:
    await drop_schemas(*schemas)
    await drop_topics(prefix)


class Watcher:
    """Reads the given topics from their start (no consumer group) and hands out decoded events.

    ``expect`` waits for the first not-yet-seen event of a type that matches a predicate and
    records when this process received it (``perf_counter``), so latencies share one clock with
    the sends.
    """

    def __init__(self, bootstrap: str, topics: dict[str, str]) -> None:
        from aiokafka import AIOKafkaConsumer

        self._bootstrap = bootstrap
        self._types = {topic: type_ for type_, topic in topics.items()}
        self.consumer = AIOKafkaConsumer(
            *topics.values(), bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        self.seen: list[tuple[float, Any]] = []  # (received perf_counter, event)
        self._used: set[str] = set()

    async def __aenter__(self) -> Watcher:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [NewTopic(t, 1, 1) for t in self._types if t not in existing]
            if new:
                with contextlib.suppress(Exception):  # another process created it meanwhile
                    await admin.create_topics(new)
        finally:
            await admin.close()
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
