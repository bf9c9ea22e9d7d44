"""Shared fixtures: real Kafka and PostgreSQL for integration and e2e tests.

Where they come from, in order:
1. an environment variable naming a running server (``MLCP_KAFKA_BOOTSTRAP``,
   ``MLCP_DATABASE_URL``) wins;
2. else testcontainers, when a Docker engine answers;
3. else the dev stack launcher (real Kafka from the Maven Central jars, embedded PostgreSQL).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mlcp.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Infra:
    """Where the test servers are, and how to reach Kafka as each bus principal.

    Every test reaches the bus authenticated, as the principal whose role it plays: a service
    as ``svc-<service>``, a pipeline as ``pipeline``, harness chores (topics, reading any
    topic, lag) as ``admin``. A topic prefix is a tenant of its own: asking for settings or an
    environment with a prefix first applies the ACL file for it (topics + ACLs).
    """

    kafka_bootstrap: str
    database_url: str
    source: str
    credentials: Path | None = None
    """One password file per principal (the dev stack's layout); None: an unauthenticated bus."""
    protocol: str = "SASL_PLAINTEXT"
    ca_file: Path | None = None

    @property
    def authenticated(self) -> bool:
        return self.credentials is not None

    def kafka_env(self, principal: str, *, prefix: str | None = None) -> dict[str, str]:
        """The MLCP_KAFKA_* variables of ``principal`` (and the bus of ``prefix`` prepared)."""
        if prefix is not None:
            self.prepare_bus(prefix)
        env = {"MLCP_KAFKA_BOOTSTRAP": self.kafka_bootstrap}
        if self.credentials is None:
            return env | {"MLCP_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
        env |= {
            "MLCP_KAFKA_SECURITY_PROTOCOL": self.protocol,
            "MLCP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "MLCP_KAFKA_USERNAME": principal,
            "MLCP_KAFKA_PASSWORD_FILE": str(self.credentials / principal),
        }
        if self.ca_file is not None:
            env["MLCP_KAFKA_CA_FILE"] = str(self.ca_file)
        return env

    def env(self, principal: str, *, prefix: str | None = None) -> dict[str, str]:
        """A child process's environment: both servers, as ``principal``, behind ``prefix``."""
        env = {"MLCP_DATABASE_URL": self.database_url, **self.kafka_env(principal, prefix=prefix)}
        if prefix is not None:
            env["MLCP_TOPIC_PREFIX"] = prefix
        return env

    def settings(self, principal: str = "admin", **overrides: Any) -> Settings:
        """``mlcp.runtime`` settings as ``principal``; a ``topic_prefix`` prepares its bus."""
        from mlcp.runtime.settings import settings_from_env

        prefix = overrides.get("topic_prefix")
        env = {
            "MLCP_DATABASE_URL": self.database_url,
            **self.kafka_env(principal, prefix=prefix),
        }
        return settings_from_env(env, **overrides)

    @property
    def admin(self) -> Settings:
        """The super user's settings: topics, reading anything, lag."""
        return self.settings("admin")

    def prepare_bus(self, prefix: str) -> None:
        """Topics and ACLs of the ACL file behind ``prefix`` (once per prefix and session)."""
        if prefix in _PREPARED or not self.authenticated:
            return  # (a bus without ACLs: the services create their topics themselves)
        if _in_loop():
            _run_in_thread(_apply_bus(self, prefix))
        else:
            asyncio.run(_apply_bus(self, prefix))
        _PREPARED.add(prefix)

    def with_tls(self, tls_bootstrap: str, ca_file: Path) -> Infra:
        """The same bus through its SASL_SSL listener."""
        return replace(self, kafka_bootstrap=tls_bootstrap, protocol="SASL_SSL", ca_file=ca_file)


_PREPARED: set[str] = set()


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_in_thread(work: Any) -> None:
    # Called from inside a test's event loop (async tests build settings too): run the admin
    # calls on a loop of their own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work).result()


async def _apply_bus(infra: Infra, prefix: str) -> None:
    from mlcp.policy.acl import load_policy
    from mlcp.runtime.bus import apply

    await apply(infra.admin, load_policy(), prefix=prefix)


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

    from mlcp.runtime.kafka import make_admin
    from mlcp.runtime.kafka_admin import delete_acls, describe_acls

    admin = make_admin(infra.admin, request_timeout_ms=30000)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if any(tok in t for tok in tokens)]
        for start in range(0, len(topics), 200):
            await admin.delete_topics(topics[start : start + 200])
        acls = []
        if infra.authenticated:
            acls = [
                b for b in await describe_acls(admin) if any(t in b.resource_name for t in tokens)
            ]
            await delete_acls(admin, acls)
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
    return f"removed {len(topics)} test topics, {len(acls)} ACLs and {len(schemas)} test schemas"


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
        # Servers of one's own: the credentials of every principal in MLCP_TEST_CREDENTIALS_DIR
        # (one file per principal, as the dev stack writes them), unless the bus is PLAINTEXT.
        protocol = os.environ.get("MLCP_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
        folder = os.environ.get("MLCP_TEST_CREDENTIALS_DIR")
        if protocol.startswith("SASL_") and not folder:
            raise pytest.UsageError(
                "MLCP_KAFKA_BOOTSTRAP names an authenticated bus: set MLCP_TEST_CREDENTIALS_DIR "
                "to a directory with one password file per principal (docs/security.md), or "
                "MLCP_KAFKA_SECURITY_PROTOCOL=PLAINTEXT for a bus without authentication"
            )
        ca = os.environ.get("MLCP_KAFKA_CA_FILE")
        return Infra(
            kafka,
            database,
            "environment",
            credentials=Path(folder) if folder and protocol.startswith("SASL_") else None,
            protocol=protocol,
            ca_file=Path(ca) if ca else None,
        )
    if _docker_answers() and (found := _from_testcontainers(stack)):
        return Infra(kafka or found[0], database or found[1], "testcontainers", credentials=None)
    from mlcp.devstack import up

    info = up(progress=lambda line: print(f"[devstack] {line}", file=sys.stderr))
    infra = Infra(info.bootstrap, info.database_url, "devstack", credentials=info.credentials_dir)
    if os.environ.get("MLCP_TEST_KAFKA_TLS") == "1" and info.tls_bootstrap and info.ca_file:
        infra = infra.with_tls(info.tls_bootstrap, info.ca_file)
    return infra


@pytest.fixture(scope="session")
def tls_infra(infra: Infra) -> Infra:
    """The same bus through the dev stack's SASL_SSL listener (skips on other servers)."""
    from mlcp.devstack import current

    info = current()
    if infra.source != "devstack" or info.tls_bootstrap is None or info.ca_file is None:
        pytest.skip("the TLS listener belongs to the dev stack")
    return infra.with_tls(info.tls_bootstrap, info.ca_file)


@pytest.fixture(scope="session", autouse=True)
def audit_keyring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path | None]:
    """The registry's audit keyring for every registry the session starts, in-process or as a
    process (they read ``MLCP_AUDIT_KEY_FILE``), unless the environment names one already."""
    if os.environ.get("MLCP_AUDIT_KEY") or os.environ.get("MLCP_AUDIT_KEY_FILE"):
        yield None
        return
    from mlcp.registry.keys import new_key_text

    path = tmp_path_factory.mktemp("audit") / "keyring"
    path.write_text(new_key_text() + "\n")
    path.chmod(0o600)
    os.environ["MLCP_AUDIT_KEY_FILE"] = str(path)
    try:
        yield path
    finally:
        os.environ.pop("MLCP_AUDIT_KEY_FILE", None)


def unique_token() -> str:
    """A short unique token for names (schemas, groups, topic prefixes); what is named after it
    is removed at the end of the session (for fixtures wider than one test)."""
    token = uuid.uuid4().hex[:10]
    _TOKENS.append(token)
    return token


@pytest.fixture
def unique() -> str:
    """A short unique token for names (schemas, groups, topic prefixes) of one test."""
    return unique_token()


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
def spawn(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Proc]]:
    """Start Python processes; every one still running is stopped after the test. A child
    that reaches the bus behind a topic prefix gets that prefix's topics and ACLs first."""
    procs: list[Proc] = []

    def start(args: list[str], env: dict[str, str], name: str = "proc") -> Proc:
        full_env = {**os.environ, **env}
        if "MLCP_TOPIC_PREFIX" in env and env.get("MLCP_KAFKA_USERNAME"):
            infra: Infra = request.getfixturevalue("infra")
            infra.prepare_bus(env["MLCP_TOPIC_PREFIX"])
        proc = Proc(args, full_env, tmp_path / f"{name}-{len(procs)}.log")
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()
