"""Bus floor: aiokafka produce → consume of the same records, no mlcp code in the path — and
what securing the bus costs: plaintext, SASL/SCRAM-SHA-512 and SASL_SSL side by side in one run.

Every record goes through the producer settings the services use (acks=all, idempotent) and a
plain consumer. Four transports carry the same workload, taking turns:

* **the bus** (row ``bus_floor``) — the dev stack's SASL_PLAINTEXT listener (or
  MLCP_KAFKA_BOOTSTRAP's), deny-by-default ACLs checked on every request: the floor under every
  other benchmark's figures. The producer is ``inference`` and the consumer ``svc-monitor``, the
  real writer and reader of PredictionLogged, on a topic of this benchmark that grants them
  exactly that.
* **plaintext, SASL/SCRAM, SASL_SSL on one private broker** (rows ``bus_floor_scram``,
  ``bus_floor_tls``, ``bus_round_trip_scram``, ``bus_round_trip_tls``) — the comparison. The
  dev stack has no plaintext listener on purpose (nobody reaches its bus without credentials),
  and a plaintext broker of its own would not compare: a broker started a minute ago runs up to
  2× slower than one warmed by an hour of tests (its JIT, its heap), which swamps what security
  costs. So this benchmark starts a private copy of the dev stack's broker — its configuration,
  SCRAM users, certificates and ACL file (``mlcp.devstack``), in a temporary state dir on free
  ports, from the cached jars — with one more listener: PLAINTEXT, whose (anonymous) clients
  are super users, so a request there skips authentication, TLS and the ACL check, as on a
  broker without security. One JVM, one disk, one warm-up: only the security differs. It is
  stopped and deleted at the end. (Without Java or the jars the comparison rows report why.)

Workload, per transport and turn: throughput — N records of one encoded ``PredictionLogged``
(~0.8 KB, 20 features) on 1 partition, sent without waiting for each ack (the producer batches,
linger 5 ms), read back by the transport's consumer, which sits at the topic's end; events/s =
N / (first send → last record received), and the CPU this process and the private broker spent
per record (what the shared machine's load disturbs least). Round trip — M records one at a
time, ``send_and_wait`` → the consumer's next record; p50 / p95 over all turns. Each turn the
order rotates, so drift on the shared machine hits every transport alike; before the turns,
each transport warms up (30,000 records and 20 round trips, not counted).

Sizes: full 11 turns × (50,000 records + 40 round trips); ``--quick`` 15 × (5,000 + 10).
The ratio of a comparison row is secured / plaintext for events/s (plaintext / secured for a
latency): the fraction of the plaintext bus the secured one achieves — 1.00× is free, 0.80×
costs a fifth. ``extra`` also holds the median of the per-turn ratios and the CPU ratio.

    uv run python bench/bus_floor.py [--quick] [--json PATH]

Servers and credentials: bench/common.py (the dev stack by default; MLCP_KAFKA_BOOTSTRAP with
MLCP_BENCH_CREDENTIALS_DIR for servers of one's own — the comparison broker is local anyway).
The topics have random names and are deleted with their ACLs at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Measure,
    bench_topic,
    bus,
    cli,
    drop_topics,
    finish,
    free_port,
    measure,
    percentile,
    servers,
    stop_process,
)

from mlcp.contracts import PredictionLogged, encode_event, new_event
from mlcp.runtime.kafka import durable_producer, make_consumer
from mlcp.runtime.settings import Settings, settings_from_env

PLAIN, SCRAM, TLS = "plaintext", "SASL/SCRAM-SHA-512", "SASL_SSL (SCRAM + TLS)"
WARMUP = 20  # round trips per transport before measuring
WARMUP_RECORDS = 30_000  # and a throughput run


def record() -> bytes:
    data = PredictionLogged.model_validate(
        {
            "model": "bench",
            "version": "1.0.0",
            "alias": "production",
            "request_id": uuid.uuid4().hex,
            "features": {f"f{i:02d}": 0.123456789 * i for i in range(20)},
            "prediction": 1,
            "probability": 0.5,
            "latency_ms": 3.2,
            "ts": "2026-01-01T00:00:00Z",
        }
    )
    return encode_event(new_event(data, source="bench/bus-floor"))


class ThrowawayBroker:
    """A private copy of the dev stack's broker with one more listener, for the comparison.

    The dev stack's own configuration, users, certificates and ACL file
    (``mlcp.devstack.kafka`` / ``security``), in a temporary state dir on free ports, from the
    cached jars — plus a PLAINTEXT listener whose (anonymous) clients are super users, so that
    on it a request skips authentication, TLS and the ACL check, as on a broker without
    security. The three transports then share one JVM, one disk and one warm-up: what differs
    between them is the security alone. Stopped and deleted by ``stop``.
    """

    def __init__(self) -> None:
        from mlcp.devstack import load_settings

        self.work = Path(tempfile.mkdtemp(prefix="mlcp-bench-kafka-"))
        self.stack = dataclasses.replace(
            load_settings(),  # its cache dir: the jars the dev stack fetched
            state_dir=self.work,
            kafka_port=free_port(),
            controller_port=free_port(),
            tls_port=free_port(),
            external_bootstrap=None,
            external_database_url=None,
        )
        self.plain_bootstrap = f"127.0.0.1:{free_port()}"
        self.popen: subprocess.Popen[bytes] | None = None

    def with_plaintext_listener(self, props: Path) -> None:
        lines = dict(line.split("=", 1) for line in props.read_text().splitlines() if line)
        plain = f"PLAINTEXT://{self.plain_bootstrap}"
        lines["listeners"] += f",{plain}"
        lines["advertised.listeners"] += f",{plain}"
        lines["listener.security.protocol.map"] += ",PLAINTEXT:PLAINTEXT"
        lines["super.users"] += ";User:ANONYMOUS"  # the principal of every PLAINTEXT client
        props.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))

    def start(self, timeout: float = 180.0) -> None:
        from mlcp.devstack import kafka, security

        def say(line: str) -> None:
            print(f"  {line}", flush=True)

        s = self.stack
        java = kafka.find_java()
        libs = kafka.ensure_jars(s, say)
        props = kafka._write_configs(s, kafka.broker_secrets(s))
        self.with_plaintext_listener(props)
        kafka._ensure_formatted(s, java, libs, props, say)
        log = s.kafka_dir / "kafka.log"
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                [*kafka._java_cmd(java, s, libs, kafka.SERVER_MAIN), str(props)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=s.kafka_dir,
            )
        deadline = time.monotonic() + timeout
        while (problem := kafka.probe(self.plain_bootstrap, timeout=2.0)) is not None:
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"the comparison Kafka did not start ({problem}):\n"
                    + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                )
            time.sleep(0.2)
        security.secure_bus(s, say)  # every principal's SCRAM user, the ACL file's topics

    def settings(self, principal: str | None, *, tls: bool = False) -> Settings:
        """A client of this broker: as ``principal`` over SCRAM (in TLS with ``tls``), or
        unauthenticated on the PLAINTEXT listener when ``principal`` is None."""
        from mlcp.devstack.stack import info

        if principal is None:
            return settings_from_env(
                {
                    "MLCP_KAFKA_BOOTSTRAP": self.plain_bootstrap,
                    "MLCP_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
                }
            )
        return settings_from_env(info(self.stack).env(principal, tls=tls))

    def stop(self) -> None:
        stop_process(self.popen)
        shutil.rmtree(self.work, ignore_errors=True)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Transport:
    """One way onto a broker: who produces, who consumes, on which topic; and its figures."""

    name: str
    producer_settings: Settings
    consumer_settings: Settings
    topic: str
    broker_pid: int | None = None  # a broker of our own: its CPU is counted too
    producer: AIOKafkaProducer | None = None
    consumer: AIOKafkaConsumer | None = None
    rates: list[float] = dataclasses.field(default_factory=list)
    cpu_us: list[float] = dataclasses.field(default_factory=list)  # per record
    round_trips: list[float] = dataclasses.field(default_factory=list)  # ms

    async def start(self) -> None:
        self.producer = durable_producer(
            self.producer_settings, client_id="bench-bus-floor", linger_ms=5
        )
        await self.producer.start()
        # One consumer for the whole run, at the topic's end: it reads every record this
        # transport sends, so each measurement starts with nothing left to read.
        self.consumer = make_consumer(
            self.consumer_settings, self.topic, auto_offset_reset="latest"
        )
        await self.consumer.start()
        await self.consumer.seek_to_end()
        for tp in self.consumer.assignment():
            await self.consumer.position(tp)

    async def stop(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()

    def clients(self) -> tuple[AIOKafkaProducer, AIOKafkaConsumer]:
        if self.producer is None or self.consumer is None:
            raise RuntimeError(f"{self.name}: start() first")
        return self.producer, self.consumer

    def cpu_s(self) -> float:
        """This process's CPU so far, plus the broker's when it is ours."""
        own = time.process_time()
        return own + (process_cpu_s(self.broker_pid) if self.broker_pid else 0.0)


async def throughput(transport: Transport, value: bytes, n: int) -> tuple[float, float]:
    """(events/s, CPU µs per record): N records sent without waiting for each ack, from the
    first send to the last record received."""
    producer, consumer, topic = *transport.clients(), transport.topic
    cpu = transport.cpu_s()
    started = time.perf_counter()
    sends = [await producer.send(topic, value, key=b"%d" % (i % 16)) for i in range(n)]
    received = 0
    while received < n:
        batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
        if not batch and time.perf_counter() - started > 120:
            raise SystemExit(f"{transport.name}: only {received}/{n} records back in 120 s")
        received += sum(len(records) for records in batch.values())
    elapsed = time.perf_counter() - started
    await asyncio.gather(*sends)  # every ack is in (they are, once consumed)
    return n / elapsed, (transport.cpu_s() - cpu) / n * 1e6


async def round_trips(transport: Transport, value: bytes, n: int) -> list[float]:
    """ms of each of ``n`` records sent one at a time: send_and_wait → received."""
    producer, consumer, topic = *transport.clients(), transport.topic
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await producer.send_and_wait(topic, value, key=b"rt")
        await asyncio.wait_for(consumer.getone(), timeout=30)
        out.append((time.perf_counter() - started) * 1000)
    return out


def unmeasured(key: str, label: str, unit: str, better: Any, why: str) -> Measure:
    """A row this run could not measure, with the reason (shown as an error row)."""
    return Measure(
        key=key, measure=label, mlcp=math.nan, unit=unit, better=better, workload="—", error=why
    )


def who(transport: Transport) -> str:
    produced, consumed = transport.producer_settings, transport.consumer_settings
    if produced.kafka_username is None:
        return "no principal"
    return f"producer {produced.kafka_username}, consumer {consumed.kafka_username}, ACLs on"


def floor_row(found: Transport, n: int, repeats: int) -> Measure:
    """The bus every other benchmark runs on, as it is: the floor of their figures."""
    rate = statistics.median(found.rates)
    p50, p95 = statistics.median(found.round_trips), percentile(found.round_trips, 95)
    return measure(
        "bus_floor",
        f"raw bus floor ({found.name}): aiokafka produce → consume",
        rate,
        "events/s",
        "higher",
        f"{n:,} records of ~0.8 KB (one PredictionLogged, 20 features), acks=all, idempotent, "
        f"linger 5 ms, 1 partition, on {found.producer_settings.kafka_bootstrap}; median of "
        f"{repeats} runs; {who(found)}; round trip: {len(found.round_trips)} records one at "
        "a time",
        note=f"round trip p50 {p50:.1f} ms, p95 {p95:.1f} ms",
        extra={"round_trip_p50_ms": p50, "round_trip_p95_ms": p95},
    )


def paired(found: Transport, plain: Transport, of: str) -> float:
    """Median over the repetitions of found / plaintext of one quantity, each pair measured
    one right after the other (drift on the shared machine cancels out within a pair)."""
    ours, theirs = getattr(found, of), getattr(plain, of)
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))


def comparison_rows(
    plain: Transport | None, secured: dict[str, Transport], why: str, n: int, m: int, repeats: int
) -> list[Measure]:
    """Each secured transport against the plaintext one of the same broker, same run."""
    out: list[Measure] = []
    anchor_name = "plaintext listener of the same broker"
    for name, (rate_key, trip_key) in {
        SCRAM: ("bus_floor_scram", "bus_round_trip_scram"),
        TLS: ("bus_floor_tls", "bus_round_trip_tls"),
    }.items():
        rate_label = f"bus floor, {name} vs plaintext: produce → consume"
        trip_label = f"bus round trip p50, {name} vs plaintext"
        found = secured.get(name)
        if found is None or plain is None:
            out.append(unmeasured(rate_key, rate_label, "events/s", "higher", why))
            out.append(unmeasured(trip_key, trip_label, "ms", "lower", why))
            continue
        cpu, plain_cpu = statistics.median(found.cpu_us), statistics.median(plain.cpu_us)
        p50, p95 = statistics.median(found.round_trips), percentile(found.round_trips, 95)
        plain_p95 = percentile(plain.round_trips, 95)
        setup = (
            "one private broker (the dev stack's configuration) with three listeners, the "
            f"transports taking turns {repeats} times; {who(found)}; plaintext: no principal, "
            "no ACL check"
        )
        out.append(
            measure(
                rate_key,
                rate_label,
                statistics.median(found.rates),
                "events/s",
                "higher",
                f"{n:,} records of ~0.8 KB (one PredictionLogged), acks=all, idempotent, linger "
                f"5 ms, 1 partition, median of {repeats} runs; {setup}; CPU: this process + the "
                "broker's per record",
                anchor=statistics.median(plain.rates),
                anchor_name=anchor_name,
                note=f"CPU {cpu:.0f} µs/record vs {plain_cpu:.0f}",
                extra={
                    "cpu_us_per_record": cpu,
                    "plaintext_cpu_us_per_record": plain_cpu,
                    "cpu_ratio": plain_cpu / cpu,
                    "paired_ratio_median": paired(found, plain, "rates"),
                },
            )
        )
        out.append(
            measure(
                trip_key,
                trip_label,
                p50,
                "ms",
                "lower",
                f"{len(found.round_trips)} records one at a time (send_and_wait → getone), "
                f"{m} per turn; {setup}",
                anchor=statistics.median(plain.round_trips),
                anchor_name=anchor_name,
                note=f"p95 {p95:.1f} ms vs {plain_p95:.1f}",
                extra={"p95_ms": p95, "plaintext_p95_ms": plain_p95},
            )
        )
    return out


async def main(quick: bool, json_path: Path | None) -> None:
    n, m, repeats = (5_000, 10, 15) if quick else (50_000, 40, 11)
    here = servers()
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    topic = prefix + "bus-floor"
    bus_name = f"{'dev stack' if here.dev_stack else 'the bus'}, {here.protocol}"
    floor = Transport(bus_name, bus("inference"), bus("svc-monitor"), topic)
    transports = [floor]
    secured: dict[str, Transport] = {}
    plain: Transport | None = None
    why = ""
    broker = ThrowawayBroker()
    try:
        await bench_topic(topic, 1, writers=["inference"], readers=["svc-monitor"])
        print(f"starting the comparison broker in {broker.work}", flush=True)
        started = time.monotonic()
        try:
            await asyncio.to_thread(broker.start)
        except Exception as error:  # no Java, no jars: the floor row still counts
            why = f"the comparison broker did not start: {error}".splitlines()[0][:200]
            print(why, flush=True)
        else:
            print(f"  up in {time.monotonic() - started:.0f} s", flush=True)
            admin = broker.settings("admin")
            await bench_topic(topic, 1, writers=["inference"], readers=["svc-monitor"], admin=admin)
            pid = broker.popen.pid if broker.popen else None
            anonymous = broker.settings(None)
            plain = Transport(PLAIN, anonymous, anonymous, topic, broker_pid=pid)
            for name, tls in ((SCRAM, False), (TLS, True)):
                producer = broker.settings("inference", tls=tls)
                consumer = broker.settings("svc-monitor", tls=tls)
                secured[name] = Transport(name, producer, consumer, topic, broker_pid=pid)
            transports += [plain, *secured.values()]

        value = record()
        for transport in transports:
            await transport.start()
            # Untimed: connections, metadata, the brokers' JIT.
            await throughput(transport, value, WARMUP_RECORDS)
            await round_trips(transport, value, WARMUP)
        for rep in range(repeats):
            turn = transports[rep % len(transports) :] + transports[: rep % len(transports)]
            for transport in turn:
                rate, cpu = await throughput(transport, value, n)
                transport.rates.append(rate)
                transport.cpu_us.append(cpu)
                transport.round_trips += await round_trips(transport, value, m)
                print(
                    f"repetition {rep + 1}/{repeats}, {transport.name}: {rate:,.0f} events/s"
                    + (f", {cpu:.0f} µs CPU/record" if transport.broker_pid else "")
                    + f", round trip p50 {statistics.median(transport.round_trips[-m:]):.2f} ms",
                    flush=True,
                )
    finally:
        for transport in transports:
            await transport.stop()
        broker.stop()
        await drop_topics(prefix)

    print(f"\nbus floor, {len(value)} B records on 1 partition, {repeats} turns of each transport")
    header = ("transport", "events/s", "vs plain", "CPU µs/rec", "rt p50 ms", "rt p95 ms")
    print(f"{header[0]:<34}" + "".join(f"{h:>11}" for h in header[1:]))
    for t in transports:
        rate, p50 = statistics.median(t.rates), statistics.median(t.round_trips)
        versus = f"{rate / statistics.median(plain.rates):.2f}×" if plain else "—"
        cpu = f"{statistics.median(t.cpu_us):.0f}" if t.broker_pid else "—"
        p95 = percentile(t.round_trips, 95)
        print(f"{t.name:<34}{rate:>11,.0f}{versus:>11}{cpu:>11}{p50:>11.2f}{p95:>11.2f}")
    rows = [floor_row(floor, n, repeats), *comparison_rows(plain, secured, why, n, m, repeats)]
    finish(rows, json_path)


if __name__ == "__main__":
    cli(__doc__, main)
