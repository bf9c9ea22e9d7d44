"""up / down / status of the whole dev stack, plus per-server helpers for fault-injection tests."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from mlcp.devstack import kafka, postgres, procs, security
from mlcp.devstack.config import DevstackError, Settings, StackInfo, load_settings

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@contextmanager
def _locked(s: Settings) -> Iterator[None]:
    with procs.file_lock(s.state_dir / ".lock"):
        yield


def _check_external(name: str, var: str, address: str, problem: str | None) -> None:
    if problem is not None:
        raise DevstackError(
            f"{var}={address} is set, so mlcp-dev does not start {name}, but nothing answers "
            f"there ({problem}).\nStart that server, or unset {var} to let mlcp-dev start one."
        )


Env = Mapping[str, str] | None  # None: os.environ; a mapping: a private stack (tests)


def up(progress: Progress | None = None, *, env: Env = None) -> StackInfo:
    """Start whatever is not already running (idempotent) and return where to connect."""
    say = progress or _quiet
    s = load_settings(env)
    kafka_started = postgres_started = False
    with _locked(s):
        if s.external_bootstrap:
            _check_external("Kafka", "MLCP_KAFKA_BOOTSTRAP", s.bootstrap, kafka.probe(s.bootstrap))
        if s.external_database_url:
            problem = postgres.probe(s.database_url)
            _check_external("PostgreSQL", "MLCP_DATABASE_URL", s.database_url, problem)
        need_kafka = not s.external_bootstrap and kafka.running(s) is None
        need_postgres = not s.external_database_url and postgres.running(s) is None
        # Every check that can fail (ports, java, mvn) runs before anything is started, and
        # all taken ports are reported at once.
        ports = {}
        if need_kafka:
            ports[s.kafka_port] = "MLCP_DEV_KAFKA_PORT"
            ports[s.controller_port] = "MLCP_DEV_KAFKA_CONTROLLER_PORT"
            ports[s.tls_port] = "MLCP_DEV_KAFKA_TLS_PORT"
        if need_postgres:
            ports[s.postgres_port] = "MLCP_DEV_POSTGRES_PORT"
        procs.ensure_ports_free(
            ports,
            "the dev stack",
            "Free those ports, or set MLCP_KAFKA_BOOTSTRAP / MLCP_DATABASE_URL to use servers "
            "that are already running.",
        )
        kafka_pid = None
        if need_kafka:
            # The JVM boots in the background while PostgreSQL starts: ~1 s saved per `up`.
            kafka_pid = kafka.launch(s, kafka.prepare(s, say), say)
        if not s.external_database_url:
            postgres_started = postgres.start(s, say)
        if kafka_pid is not None:
            kafka.wait_ready(s, kafka_pid, progress=say)
            kafka_started = True
        elif not s.external_bootstrap:
            kafka_started = kafka.start(s, say)
        if not s.external_bootstrap:
            # Users, topics and ACLs as the ACL file says (idempotent: a no-op when in step).
            security.secure_bus(s, say)
    return info(s, kafka_started=kafka_started, postgres_started=postgres_started)


def principals() -> list[str]:
    """The bus principals of the ACL file."""
    return security.principals()


def current(principal: str | None = None, *, env: Env = None) -> StackInfo:
    """Where the stack is (without starting anything); with ``principal``, checks that its
    password file exists."""
    s = load_settings(env)
    if principal is not None and not s.external_bootstrap:
        if principal not in security.principals():
            raise DevstackError(
                f"unknown principal {principal!r}; the ACL file has "
                f"{', '.join(security.principals())}"
            )
        if not security.password_file(s, principal).exists():
            raise DevstackError("the dev stack has no credentials yet: run `mlcp-dev up` first")
    return info(s)


def info(s: Settings, *, kafka_started: bool = False, postgres_started: bool = False) -> StackInfo:
    """Where this stack's servers are and, for its own Kafka, the credentials and CA."""
    ours = not s.external_bootstrap
    return StackInfo(
        bootstrap=s.bootstrap,
        database_url=s.database_url,
        kafka_started=kafka_started,
        postgres_started=postgres_started,
        kafka_external=not ours,
        postgres_external=bool(s.external_database_url),
        credentials_dir=security.credentials_dir(s) if ours else None,
        tls_bootstrap=s.tls_bootstrap,
        ca_file=security.tls_dir(s) / "ca.pem" if ours else None,
    )


def down(progress: Progress | None = None, *, env: Env = None) -> list[str]:
    """Stop the servers this state dir runs (never external ones); returns what was stopped."""
    say = progress or _quiet
    s = load_settings(env)
    stopped = []
    with _locked(s):
        say("stopping Kafka")
        if kafka.stop(s):
            stopped.append("kafka")
        say("stopping PostgreSQL")
        if postgres.stop(s):
            stopped.append("postgres")
    return stopped


def reset(progress: Progress | None = None) -> list[str]:
    """Stop the managed servers and delete their data and logs (the jar cache is kept).

    Returns the directories removed. External servers are never touched.
    """
    say = progress or _quiet
    down(say)
    s = load_settings()
    removed = []
    with _locked(s):
        for path in (s.kafka_dir, s.postgres_dir):
            if path.exists():
                say(f"removing {path}")
                shutil.rmtree(path)
                removed.append(str(path))
    return removed


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str  # bootstrap servers or DSN
    managed: bool  # False: an external server named by MLCP_KAFKA_BOOTSTRAP / MLCP_DATABASE_URL
    pid: int | None
    reachable: bool
    detail: str  # why it is unreachable, else the log file of a managed server
    log: Path | None


def status() -> dict[str, ComponentStatus]:
    s = load_settings()
    k = None if s.external_bootstrap else kafka.running(s)
    p = None if s.external_database_url else postgres.running(s)
    # Report the ports the servers really use, which may predate a change of MLCP_DEV_*_PORT.
    actual = replace(
        s,
        kafka_port=k["port"] if k else s.kafka_port,
        postgres_port=p["port"] if p else s.postgres_port,
    )
    bootstrap, dsn = actual.bootstrap, actual.database_url
    k_problem = kafka.probe(bootstrap, timeout=2.0)
    p_problem = postgres.probe(dsn, timeout=2.0)
    k_log = None if s.external_bootstrap else s.kafka_dir / "kafka.log"
    p_log = None if s.external_database_url else s.postgres_dir / "postgres.log"
    return {
        "kafka": ComponentStatus(
            "kafka", bootstrap, not s.external_bootstrap, k["pid"] if k else None,
            k_problem is None, k_problem or "", k_log,
        ),
        "postgres": ComponentStatus(
            "postgres", dsn, not s.external_database_url, p["pid"] if p else None,
            p_problem is None, p_problem or "", p_log,
        ),
    }  # fmt: skip


def _managed(s: Settings, var: str, external: str | None) -> None:
    if external:
        raise DevstackError(f"{var} points at an external server; mlcp-dev does not control it.")


def start_kafka(progress: Progress | None = None, *, env: Env = None) -> bool:
    s = load_settings(env)
    _managed(s, "MLCP_KAFKA_BOOTSTRAP", s.external_bootstrap)
    with _locked(s):
        started = kafka.start(s, progress or _quiet)
        # The broker serves authenticated requests only once it has registered itself.
        security.secure_bus(s, progress or _quiet)
        return started


def rotate_password(principal: str, *, env: Env = None, password: str | None = None) -> Path:
    """Give ``principal`` a new password on the running broker and in its file; processes
    that connect afterwards need the new one (a running one keeps its connections until it
    restarts). Returns the password file."""
    s = load_settings(env)
    _managed(s, "MLCP_KAFKA_BOOTSTRAP", s.external_bootstrap)
    if principal not in security.principals():
        raise DevstackError(
            f"unknown principal {principal!r}; the ACL file has {', '.join(security.principals())}"
        )
    if principal == security.admin_principal():
        raise DevstackError(
            "the admin's password is part of the broker's own configuration: "
            "`mlcp-dev reset` makes a new stack with new passwords"
        )
    with _locked(s):
        if kafka.running(s) is None:
            raise DevstackError("the dev Kafka is not running: `mlcp-dev up` first")
        security.set_password(s, principal, password)
        security.secure_bus(s, _quiet)
    return security.password_file(s, principal)


def stop_kafka(*, kill: bool = False, timeout: float = 30.0, env: Env = None) -> bool:
    """Clean shutdown by default; `kill=True` sends SIGKILL to simulate a broker crash."""
    s = load_settings(env)
    _managed(s, "MLCP_KAFKA_BOOTSTRAP", s.external_bootstrap)
    with _locked(s):
        return kafka.stop(s, kill=kill, timeout=timeout)


def restart_kafka(*, kill: bool = False, downtime: float = 0.0, env: Env = None) -> None:
    """Stop (or kill) the broker, stay down for `downtime` seconds, start it, wait until ready."""
    stop_kafka(kill=kill, env=env)
    time.sleep(downtime)
    start_kafka(env=env)


def start_postgres(progress: Progress | None = None, *, env: Env = None) -> bool:
    s = load_settings(env)
    _managed(s, "MLCP_DATABASE_URL", s.external_database_url)
    with _locked(s):
        return postgres.start(s, progress or _quiet)


def stop_postgres(*, mode: postgres.StopMode = "fast", env: Env = None) -> bool:
    """`fast` rolls back open transactions and checkpoints; `immediate` simulates a crash."""
    s = load_settings(env)
    _managed(s, "MLCP_DATABASE_URL", s.external_database_url)
    with _locked(s):
        return postgres.stop(s, mode=mode)


def restart_postgres(
    *, mode: postgres.StopMode = "fast", downtime: float = 0.0, env: Env = None
) -> None:
    stop_postgres(mode=mode, env=env)
    time.sleep(downtime)
    start_postgres(env=env)
