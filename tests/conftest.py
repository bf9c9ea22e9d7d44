"""Shared fixtures: real Kafka and PostgreSQL for integration and e2e tests.

Where they come from, in order (DESIGN.md §7):
1. an environment variable naming a running server (``MLCP_KAFKA_BOOTSTRAP``,
   ``MLCP_DATABASE_URL``) wins;
2. else testcontainers, when a Docker engine answers;
3. else the dev stack launcher (real Kafka from the Maven Central jars, embedded PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Infra:
    """Where the test servers are."""

    kafka_bootstrap: str
    database_url: str
    source: str


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


def _from_testcontainers(stack: contextlib.ExitStack) -> tuple[str, str] | None:
    # testcontainers 4 contacts Docker in the constructors, so they are inside the guard too.
    try:
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer

        kafka = KafkaContainer("apache/kafka:4.1.1").with_kraft()
        postgres = PostgresContainer("postgres:17", username="mlcp", password="mlcp", dbname="mlcp")
        stack.enter_context(kafka)
        stack.enter_context(postgres)
        dsn = postgres.get_connection_url(driver=None).replace("postgresql+psycopg2", "postgresql")
        return kafka.get_bootstrap_server(), dsn
    except Exception:
        return None


# Every token handed out by `unique` in this session: the topics and schemas named after them are
# removed when the session ends, so a long-lived dev stack does not pile up thousands of test
# topics (a broker with ~12k partitions needs minutes to start). MLCP_TEST_KEEP=1 keeps them.
_TOKENS: list[str] = []


async def _remove_test_leftovers(infra: Infra, tokens: list[str]) -> str:
    import asyncpg
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if any(tok in t for tok in tokens)]
        for start in range(0, len(topics), 200):
            await admin.delete_topics(topics[start : start + 200])
    finally:
        await admin.close()
    conn = await asyncpg.connect(infra.database_url, timeout=10)
    try:
        names = await conn.fetch("SELECT nspname FROM pg_namespace")
        schemas = [r["nspname"] for r in names if any(tok in r["nspname"] for tok in tokens)]
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    return f"removed {len(topics)} test topics and {len(schemas)} test schemas"


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """Real Kafka and PostgreSQL for the session."""
    with contextlib.ExitStack() as stack:
        found = _locate_infra(stack)
        try:
            yield found
        finally:
            if _TOKENS and os.environ.get("MLCP_TEST_KEEP") != "1":
                try:
                    note = asyncio.run(_remove_test_leftovers(found, list(_TOKENS)))
                    print(f"\n[cleanup] {note}", file=sys.stderr)
                except Exception as error:  # best effort: never fail the session over cleanup
                    print(f"\n[cleanup] skipped: {error!r}", file=sys.stderr)


def _locate_infra(stack: contextlib.ExitStack) -> Infra:
    kafka = os.environ.get("MLCP_KAFKA_BOOTSTRAP")
    database = os.environ.get("MLCP_DATABASE_URL")
    if kafka and database:
        return Infra(kafka, database, "environment")
    if _docker_answers() and (found := _from_testcontainers(stack)):
        return Infra(kafka or found[0], database or found[1], "testcontainers")
    from mlcp.devstack import up

    info = up(progress=lambda line: print(f"[devstack] {line}", file=sys.stderr))
    return Infra(info.bootstrap, info.database_url, "devstack")


@pytest.fixture
def unique() -> str:
    """A short unique token for names (schemas, groups, topic prefixes) of one test."""
    token = uuid.uuid4().hex[:10]
    _TOKENS.append(token)
    return token


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(
    predicate: Callable[[], Awaitable[Any]],
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "",
) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or predicate} (last: {last!r})"
    )


class Proc:
    """A service process started by a test, with its output kept for failure messages."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, *args], env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def output_text(self) -> str:
        """Everything the process has written so far."""
        return self.log_path.read_text(errors="replace")

    async def wait_exit(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while self.popen.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"process did not exit in {timeout}s:\n{self.output()}")
            await asyncio.sleep(0.05)
        return int(self.popen.returncode)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start Python processes; every one still running is stopped after the test."""
    procs: list[Proc] = []

    def start(args: list[str], env: dict[str, str], name: str = "proc") -> Proc:
        full_env = {**os.environ, **env}
        proc = Proc(args, full_env, tmp_path / f"{name}-{len(procs)}.log")
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()
