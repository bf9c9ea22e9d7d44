"""The e2e test bed: a private dev stack, the five services as processes, the bus, the registry.

Everything here is plumbing for ``test_lifecycle_faults.py``; the scenario and the reconciliation
live there and in ``reconcile.py``.

* ``PrivateStack`` — Kafka and PostgreSQL of mlcp.devstack in the test's own state dir and on free
  ports, so that killing them never disturbs anyone else's tests on the shared dev stack.
* ``Services`` — ``python -m mlcp.<service>`` processes with one environment; ``kill`` sends
  SIGKILL and starts the service again at once; a process that exits on its own is restarted
  too (as a supervisor would) and recorded, because a service should never need that.
* ``Bus`` — produce events (re-sent on a broker error, as a client would: consumers dedupe on the
  CloudEvents id) and read whole topics.
* ``Registry`` — the registry's HTTP API as an inference service uses it (which version holds an
  alias); a call that fails while the registry or PostgreSQL is down answers ``None``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from mlcp import devstack
from mlcp.contracts import CloudEvent, encode_event
from mlcp.policy.acl import load_policy
from mlcp.runtime.bus import apply
from mlcp.runtime.kafka import durable_producer, make_admin, make_consumer
from mlcp.runtime.settings import Settings, settings_from_env
from tests.conftest import free_port, wait_for
from tests.integration.kafka_tools import read_all

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("registry", "trainer", "gatekeeper", "monitor", "notifier")


def log(line: str) -> None:
    """Progress lines on stderr with a wall-clock stamp (pytest shows them on failure, or -s)."""
    print(f"[e2e {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


class PrivateStack:
    """Kafka + PostgreSQL of the dev stack under ``root``, on free ports, for this test only."""

    def __init__(self, root: Path) -> None:
        self.env = {
            "MLCP_STATE_DIR": str(root),
            "MLCP_DEV_KAFKA_PORT": str(free_port()),
            "MLCP_DEV_KAFKA_CONTROLLER_PORT": str(free_port()),
            "MLCP_DEV_KAFKA_TLS_PORT": str(free_port()),
            "MLCP_DEV_POSTGRES_PORT": str(free_port()),
        }
        # The Kafka jars are cached outside the state dir: share the user's cache.
        if cache := os.environ.get("MLCP_CACHE_DIR"):
            self.env["MLCP_CACHE_DIR"] = cache
        settings = devstack.load_settings(self.env)
        self.bootstrap = settings.bootstrap
        self.database_url = settings.database_url
        self.kafka_log = settings.kafka_dir / "kafka.log"
        self.postgres_log = settings.postgres_dir / "postgres.log"

    def up(self) -> None:
        devstack.up(lambda line: log(f"devstack: {line}"), env=self.env)

    def principal_env(self, principal: str) -> dict[str, str]:
        """The MLCP_* variables that reach this stack as ``principal``."""
        return devstack.current(env=self.env).env(principal)

    def settings(self, principal: str, **overrides: Any) -> Settings:
        return settings_from_env(self.principal_env(principal), **overrides)

    async def prepare_bus(self, prefix: str) -> None:
        """The topics and ACLs of the ACL file behind ``prefix``."""
        await apply(self.settings("admin"), load_policy(), prefix=prefix)

    def down(self) -> None:
        devstack.down(env=self.env)

    async def restart_kafka(self) -> float:
        """SIGKILL the broker, start it again, wait until it answers; returns the downtime."""
        started = time.monotonic()
        await asyncio.to_thread(devstack.restart_kafka, kill=True, env=self.env)
        return time.monotonic() - started

    async def restart_postgres(self) -> float:
        """Crash PostgreSQL (``pg_ctl stop -m immediate``: recovery on start), start it again."""
        started = time.monotonic()
        await asyncio.to_thread(devstack.restart_postgres, mode="immediate", env=self.env)
        return time.monotonic() - started


@dataclass
class ServiceProc:
    """One service: its process (replaced on every restart) and one log file across restarts."""

    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: list[float] = field(default_factory=list)  # wall-clock times of our SIGKILLs
    crashes: list[str] = field(default_factory=list)  # exits nobody asked for

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as out:
            stamp = time.strftime("%H:%M:%S")
            out.write(f"\n===== start #{self.starts} at {stamp} =====\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                [sys.executable, "-m", f"mlcp.{self.name}"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """kill -9, reaped at once, then started again right away."""
        assert self.popen is not None
        self.kills.append(time.time())
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()
        self.start()

    def stop(self) -> int | None:
        if self.popen is None or self.popen.poll() is not None:
            return None if self.popen is None else self.popen.returncode
        self.popen.terminate()
        try:
            return self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    async def ready(self, client: httpx.AsyncClient) -> bool:
        if not self.alive():
            return False
        try:
            answer = await client.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200


class Services:
    """The five services as processes, plus a watchdog that restarts one that exits by itself."""

    def __init__(
        self,
        env: dict[str, str],
        schemas: dict[str, str],
        log_dir: Path,
        principal_env: Callable[[str], dict[str, str]],
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in SERVICES}
        common = {**os.environ, **env, "MLCP_REGISTRY_URL": f"http://127.0.0.1:{ports['registry']}"}
        if os.environ.get("PYTHONDONTWRITEBYTECODE"):
            # Every restart would compile scikit-learn, scipy and pandas from source again (~10 s
            # of CPU per trainer start here): keep the bytecode, but outside the source tree.
            common["PYTHONDONTWRITEBYTECODE"] = ""
            common["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "mlcp-e2e-pycache")
        self.procs = {
            name: ServiceProc(
                name,
                ports[name],
                {
                    **common,
                    **principal_env(f"svc-{name}"),  # each service as its own bus principal
                    "MLCP_HTTP_PORT": str(ports[name]),
                    "MLCP_DB_SCHEMA": schemas[name],
                },
                log_dir / f"{name}.log",
            )
            for name in SERVICES
        }
        self._watchdog: asyncio.Task[None] | None = None

    def __getitem__(self, name: str) -> ServiceProc:
        return self.procs[name]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.procs[name].port}"

    async def start(self, timeout: float = 400.0) -> None:
        for proc in self.procs.values():
            proc.start()
        await self.wait_ready(timeout)
        self._watchdog = asyncio.create_task(self._watch())

    async def wait_ready(self, timeout: float = 400.0) -> None:
        async with httpx.AsyncClient() as client:

            async def all_ready() -> bool:
                return all([await p.ready(client) for p in self.procs.values()])

            try:
                await wait_for(all_ready, timeout=timeout, what="every service's /readyz")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{self.tails()}") from None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for proc in self.procs.values():
                if proc.popen is not None and proc.popen.poll() is not None:
                    code = proc.popen.returncode
                    proc.crashes.append(f"exit {code} at {time.strftime('%H:%M:%S')}")
                    log(f"{proc.name} exited by itself (code {code}); restarting it")
                    proc.start()

    async def stop(self) -> dict[str, int | None]:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        codes = await asyncio.gather(*(asyncio.to_thread(p.stop) for p in self.procs.values()))
        return dict(zip(self.procs, codes, strict=True))

    def crashes(self) -> dict[str, list[str]]:
        return {name: p.crashes for name, p in self.procs.items() if p.crashes}

    def tails(self, lines: int = 40) -> str:
        return "\n".join(
            f"----- {name} (last {lines} lines of {p.log_path}) -----\n{p.tail(lines)}"
            for name, p in self.procs.items()
        )


class SinkProc:
    """``python -m mlcp.examples.webhook_sink`` in its own process: it keeps answering within the
    notifier's HTTP timeout however busy the test's own event loop is."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._out = log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "mlcp.examples.webhook_sink", "--port", str(self.port)],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    async def wait_ready(self, timeout: float = 120.0) -> None:
        async def answers() -> bool:
            assert self.popen.poll() is None, "the sink exited"
            return await self.requests() is not None

        await wait_for(answers, timeout=timeout, what="the webhook sink")

    async def requests(self) -> list[dict[str, Any]] | None:
        """Every request the sink recorded, oldest first (None if it does not answer)."""
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.get(f"{self.url}/_sink/requests")
        except httpx.HTTPError:
            return None
        return list(answer.json()) if answer.status_code == 200 else None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            self.popen.wait(20)
        self._out.close()


class Bus:
    """One idempotent producer for the test's events, and whole-topic reads."""

    def __init__(self, settings: Settings, prefix: str) -> None:
        self.settings = settings  # the admin's: the harness writes and reads any topic
        self.prefix = prefix
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    def topic(self, event_type: str) -> str:
        return f"{self.prefix}{event_type}"

    async def _get_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = durable_producer(
                self.settings, client_id="mlcp-e2e", linger_ms=5, request_timeout_ms=15000
            )
            await producer.start()
            self._producer = producer
        return self._producer

    async def _reset(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.gather(producer.stop(), return_exceptions=True)

    async def send(self, events: Iterable[CloudEvent[Any]], *, timeout: float = 120.0) -> None:
        """Publish and wait for acks=all; on a broker error send the same events again."""
        batch = list(events)
        deadline = time.monotonic() + timeout
        while True:
            try:
                async with self._lock:
                    producer = await self._get_producer()
                    futures = [
                        await producer.send(
                            self.topic(e.type),
                            value=encode_event(e),
                            key=e.subject.encode() if e.subject else None,
                        )
                        for e in batch
                    ]
                await asyncio.gather(*futures)
                return
            except (KafkaError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise
                log(f"producer: {type(exc).__name__}: {exc}; sending {len(batch)} again")
                async with self._lock:
                    await self._reset()
                await asyncio.sleep(1.0)

    async def send_raw(self, event_type: str, key: bytes, value: bytes) -> None:
        async with self._lock:
            producer = await self._get_producer()
            await producer.send_and_wait(self.topic(event_type), value=value, key=key)

    async def close(self) -> None:
        await self._reset()

    async def topics(self) -> list[str]:
        admin = make_admin(self.settings)
        await admin.start()
        try:
            return sorted(t for t in await admin.list_topics() if t.startswith(self.prefix))
        finally:
            await admin.close()

    async def read(self, topic: str, timeout: float = 60.0) -> list[Any]:
        """Every record currently in ``topic`` (all partitions), without joining a group."""
        return await read_all(self.settings, topic, timeout=timeout)

    async def lag(self, group: str) -> int | None:
        """Records of the test's topics that ``group`` has not committed yet."""
        admin = make_admin(self.settings)
        consumer = make_consumer(self.settings, enable_auto_commit=False)
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(group)
            if not committed:
                return None
            ends = await consumer.end_offsets(list(committed))
            return sum(max(int(ends[tp]) - int(meta.offset), 0) for tp, meta in committed.items())
        finally:
            await consumer.stop()
            await admin.close()


class Registry:
    """The registry's HTTP API with the bootstrap admin token."""

    def __init__(self, base_url: str, token: str) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=5
        )

    async def get(self, path: str) -> Any:
        """The JSON answer, or None when the registry (or its database) cannot answer now."""
        try:
            answer = await self._client.get(path)
        except httpx.HTTPError:
            return None
        if answer.status_code == 404:
            return {}
        if answer.status_code != 200:
            return None
        return answer.json()

    async def alias(self, model: str, alias: str) -> str | None:
        """The version ``alias`` points at ('' when unset), None when unknown right now."""
        body = await self.get(f"/models/{model}/aliases/{alias}")
        if body is None:
            return None
        return str(body.get("version") or "")

    async def close(self) -> None:
        await self._client.aclose()
