"""Apache Kafka (KRaft, one combined broker+controller node) run straight from its Maven jars."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlcp.devstack import procs, security
from mlcp.devstack.config import DevstackError, Settings

KAFKA_VERSION = "4.1.1"  # keep in step with kafka-pom.xml
MIN_JAVA = 17
# The classes bin/kafka-server-start.sh and bin/kafka-storage.sh run in the 4.1 distribution.
SERVER_MAIN = "kafka.Kafka"
STORAGE_MAIN = "kafka.tools.StorageTool"

# Fully qualified so the plugin version does not depend on the installed Maven's defaults.
_COPY_DEPENDENCIES = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"

Progress = Callable[[str], None]

_JAVA_HINT = (
    "Install a Java 17+ runtime (Debian/Ubuntu: apt-get install openjdk-17-jre-headless; "
    "macOS: brew install openjdk@17) and put `java` on PATH or set JAVA_HOME, "
    "or set MLCP_KAFKA_BOOTSTRAP to a Kafka that is already running."
)
_MVN_HINT = (
    "Maven fetches the jars from https://repo.maven.apache.org once; check that it is "
    "reachable (a proxy or mirror goes in ~/.m2/settings.xml), or set MLCP_KAFKA_BOOTSTRAP "
    "to a Kafka that is already running."
)


def _maven_error(line: str) -> bool:
    """Maven's own error lines, without its generic advice about -e, -X and wiki pages."""
    boilerplate = ("re-run maven", "to see the full stack trace", "for more information", "[help")
    text = line.removeprefix("[ERROR]").strip().lower()
    return line.startswith("[ERROR]") and bool(text) and not text.startswith(boilerplate)


def java_major(version_output: str) -> int | None:
    """Major version in `java -version` output: '1.8.0_292' -> 8, '17.0.15' -> 17, '21-ea' -> 21."""
    found = re.search(r'version "([^"]+)"', version_output)
    if found is None:
        return None
    parts = found.group(1).split(".")
    head = parts[1] if parts[0] == "1" and len(parts) > 1 else parts[0]
    digits = re.match(r"\d+", head)
    return int(digits.group(0)) if digits else None


def find_java() -> str:
    """The `java` Kafka will run on ($JAVA_HOME first, as Kafka's own scripts do), checked >= 17."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if java is None or not os.access(java, os.X_OK):
        where = f"JAVA_HOME={java_home} has no bin/java" if java_home else "no `java` on PATH"
        raise DevstackError(f"Kafka needs Java {MIN_JAVA}+, but {where}.\n{_JAVA_HINT}")
    output = procs.run([java, "-version"], what=f"`{java} -version`", hint=_JAVA_HINT, timeout=30)
    major = java_major(output)
    if major is None or major < MIN_JAVA:
        first = output.strip().splitlines()[:1]
        raise DevstackError(
            f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+, but {java} is "
            f"{first[0] if first else 'of unknown version'}.\n{_JAVA_HINT}"
        )
    return java


def jars_dir(s: Settings) -> Path:
    return s.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"


def ensure_jars(s: Settings, progress: Progress) -> Path:
    """Kafka's runtime classpath in the cache, fetched by Maven with strict checksums once."""
    libs = jars_dir(s)
    root = libs.parent
    done = root / "jars.json"
    if done.exists() and libs.is_dir():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevstackError(
            f"Maven (`mvn`) is needed once to fetch the Apache Kafka {KAFKA_VERSION} jars into "
            f"{root}: install it (Debian/Ubuntu: apt-get install maven; macOS: brew install "
            "maven), or set MLCP_KAFKA_BOOTSTRAP to a Kafka that is already running."
        )
    root.mkdir(parents=True, exist_ok=True)
    with procs.file_lock(root / ".lock"):
        if done.exists() and libs.is_dir():  # another `up` fetched them while we waited
            return libs
        pom = root / "pom.xml"
        pom.write_bytes(resources.files(__package__).joinpath("kafka-pom.xml").read_bytes())
        # Copy into a side directory and rename, so an interrupted fetch never looks complete.
        partial = root / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(libs, ignore_errors=True)
        progress(f"fetching Apache Kafka {KAFKA_VERSION} jars with Maven (checksums verified)")
        started = time.monotonic()
        procs.run(
            [
                mvn,
                "-q",
                "-B",
                "-C",
                "-f",
                str(pom),
                _COPY_DEPENDENCIES,
                f"-DoutputDirectory={partial}",
            ],
            what="Fetching the Kafka jars with Maven",
            hint=_MVN_HINT,
            timeout=1800,
            cwd=root,
            error_lines=_maven_error,
        )
        jars = sorted(p.name for p in partial.glob("*.jar"))
        if f"kafka_2.13-{KAFKA_VERSION}.jar" not in jars:
            raise DevstackError(
                f"Maven finished but no Kafka broker jar is in {partial}.\n{_MVN_HINT}"
            )
        partial.rename(libs)
        done.write_text(json.dumps({"kafka": KAFKA_VERSION, "jars": jars}, indent=1))
        progress(f"fetched {len(jars)} jars in {time.monotonic() - started:.1f} s into {libs}")
    return libs


@dataclass(frozen=True)
class BrokerSecrets:
    """What the broker's own configuration needs to authenticate and serve TLS."""

    admin: str  # the super user (inter-broker traffic uses it too)
    admin_password: str
    controller_password: str  # the controller listener's SASL/PLAIN identity
    tls: security.TlsFiles


def _jaas(module: str, **options: str) -> str:
    pairs = " ".join(f'{key}="{value}"' for key, value in options.items())
    return f"org.apache.kafka.common.security.{module} required {pairs};"


def render_server_properties(s: Settings, secrets: BrokerSecrets) -> str:
    """server.properties: SASL/SCRAM-SHA-512 on the client listeners (plain and TLS), SASL/PLAIN
    between broker and controller (KRaft keeps SCRAM credentials in its metadata log, so the
    controller listener cannot use them), StandardAuthorizer with deny-by-default."""
    listeners = (
        f"SASL_PLAINTEXT://127.0.0.1:{s.kafka_port},SASL_SSL://127.0.0.1:{s.tls_port},"
        f"CONTROLLER://127.0.0.1:{s.controller_port}"
    )
    scram = _jaas("scram.ScramLoginModule", username=secrets.admin, password=secrets.admin_password)
    plain = _jaas(
        "plain.PlainLoginModule",
        username=security.CONTROLLER_USER,
        password=secrets.controller_password,
        **{f"user_{security.CONTROLLER_USER}": secrets.controller_password},
    )
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{s.controller_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "listeners": listeners,
        "advertised.listeners": listeners,
        "listener.security.protocol.map": (
            "SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT"
        ),
        # Authentication: nobody reaches a listener without credentials.
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": scram,
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain,
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(secrets.tls.keystore),
        "ssl.keystore.password": secrets.tls.keystore_password,
        # Authorisation: deny unless an ACL allows; the admin (and the controller identity the
        # broker and controller use between themselves) are the only super users.
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{secrets.admin};User:{security.CONTROLLER_USER}",
        # Topics come from `mlcp bus apply` with their ACLs, never from a typo in a client.
        "auto.create.topics.enable": "false",
        "log.dirs": str(s.kafka_dir / "data"),
        "num.partitions": "3",
        # One node: internal topics cannot have the default replication factor of 3.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # 50 partitions each by default; fewer make the first group join / transaction faster.
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.num.partitions": "10",
        # The default 3 s delay (and 6 s / 45 s minimum session timeouts) make every consumer
        # group join slow; tests use short session timeouts to see failover quickly.
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",
        "group.consumer.min.session.timeout.ms": "1000",
        "group.consumer.min.heartbeat.interval.ms": "500",
        # After a crash (SIGKILL) the restarted broker cannot register until the controller
        # expires its old session (default 9 s): that wait is the bulk of a kill+restart.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "500",
        # A laptop-sized broker: the defaults (3 network, 8 io threads) only add contention.
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


def _java_cmd(java: str, s: Settings, libs: Path, main: str, *, tool: bool = False) -> list[str]:
    jvm = (
        # A one-shot tool: the fastest start matters, not throughput.
        ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Dmlcp.kafka.loglevel=WARN"]
        if tool
        # Heap and GC settings of kafka-server-start.sh / kafka-run-class.sh, with a smaller heap.
        else [
            "-Xms128m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
        ]
    )
    log_config = s.kafka_dir / "log4j2.properties"
    return [
        java,
        *jvm,
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log_config}",
        "-cp",
        f"{libs}{os.sep}*",
        main,
    ]


def broker_secrets(s: Settings) -> BrokerSecrets:
    """The passwords (made once per state dir) and TLS files the broker is configured with."""
    passwords = security.ensure_credentials(s)
    admin = security.admin_principal()
    return BrokerSecrets(
        admin=admin,
        admin_password=passwords[admin],
        controller_password=passwords[security.CONTROLLER_USER],
        tls=security.ensure_tls(s),
    )


def _write_configs(s: Settings, secrets: BrokerSecrets) -> Path:
    s.kafka_dir.mkdir(parents=True, exist_ok=True)
    s.kafka_dir.chmod(0o700)
    props = s.kafka_dir / "server.properties"
    # It holds the admin's password: readable by this user only.
    props.touch(mode=0o600)
    props.chmod(0o600)
    props.write_text(render_server_properties(s, secrets))
    log_config = resources.files(__package__).joinpath("log4j2.properties").read_bytes()
    (s.kafka_dir / "log4j2.properties").write_bytes(log_config)
    return props


# Bumped when the stack's security layout changes in a way the metadata log must be made anew
# for (1: SCRAM users bootstrapped at format, ACLs, SASL listeners).
SECURITY_LAYOUT = 1


def _ensure_formatted(s: Settings, java: str, libs: Path, props: Path, progress: Progress) -> None:
    data = s.kafka_dir / "data"
    stamp = s.kafka_dir / "formatted.json"
    try:
        formatted = json.loads(stamp.read_text())
    except (OSError, ValueError):
        formatted = {}
    current = formatted.get("controller_port") == s.controller_port
    secured = formatted.get("security") == SECURITY_LAYOUT
    if (data / "meta.properties").exists() and current and secured:
        return
    if data.exists():
        # --standalone writes the controller's endpoint into the metadata log, and the admin's
        # SCRAM credential must be in it before the broker can authenticate to itself: a new
        # controller port, an unauthenticated old stack or a half-done format needs a fresh log.
        why = (
            f"controller port is now {s.controller_port}"
            if secured or not formatted
            else "the bus is now authenticated (SASL/SCRAM + ACLs)"
        )
        progress(f"{why}: discarding Kafka data in {data}")
        shutil.rmtree(data)
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    admin, passwords = security.admin_principal(), security.ensure_credentials(s)
    progress(f"formatting Kafka storage (KRaft, cluster id {cluster_id})")
    procs.run(
        [
            *_java_cmd(java, s, libs, STORAGE_MAIN, tool=True),
            "format",
            "-t",
            cluster_id,
            "-c",
            str(props),
            "--standalone",
            # The broker authenticates to itself as the admin, so the admin's SCRAM credential
            # must be in the first metadata records. (The storage tool takes it only as an
            # argument; the other principals are created over the authenticated API after
            # start, so their passwords never appear on a command line.)
            "--add-scram",
            f"SCRAM-SHA-512=[name={admin},password={passwords[admin]}]",
        ],
        what="Formatting the Kafka storage",
        timeout=180,
        cwd=s.kafka_dir,
    )
    stamp.write_text(
        json.dumps(
            {
                "cluster_id": cluster_id,
                "controller_port": s.controller_port,
                "security": SECURITY_LAYOUT,
            }
        )
    )


def _state_file(s: Settings) -> Path:
    return s.kafka_dir / "kafka.json"


def running(s: Settings) -> dict[str, int] | None:
    """{'pid', 'port', 'controller_port'} of the broker this state dir runs, if it is alive."""
    try:
        raw = json.loads(_state_file(s).read_text())
        state = {key: int(raw[key]) for key in ("pid", "port", "controller_port")}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    marker = str(s.kafka_dir / "server.properties")
    if procs.pid_alive(state["pid"], cmdline_contains=marker):
        return state
    _state_file(s).unlink(missing_ok=True)
    return None


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise DevstackError(f"Kafka bootstrap {bootstrap!r} is not a list of host:port.")
        out.append((host.strip("[]"), int(port)))
    return out


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = b""
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        buf += chunk
    return buf


def api_versions(host: str, port: int, timeout: float = 3.0) -> int:
    """The error code of an ApiVersions request: the one request a Kafka listener answers
    before authentication (KIP-43), so it tells whether the broker serves requests without
    needing credentials. 0 means it does."""
    client_id = b"mlcp-dev"
    request = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        correlation_id, error_code = struct.unpack(">ih", _recv_exact(sock, size)[:6])
    if correlation_id != 7:
        raise ConnectionError("not a Kafka ApiVersions response")
    return int(error_code)


def probe(bootstrap: str, timeout: float = 3.0) -> str | None:
    """None when some bootstrap address answers a Kafka request, else why not. (Whether the
    broker has registered is seen by the authenticated clients that come next.)"""
    problem = "no address"
    for host, port in _addresses(bootstrap):
        try:
            code = api_versions(host, port, timeout)
            if code == 0:
                return None
            problem = f"{host}:{port} answers ApiVersions with error code {code}"
        except (OSError, struct.error) as err:
            problem = f"{host}:{port}: {err or type(err).__name__}"
    return problem


def check_ports(s: Settings) -> None:
    procs.ensure_ports_free(
        {
            s.kafka_port: "MLCP_DEV_KAFKA_PORT",
            s.controller_port: "MLCP_DEV_KAFKA_CONTROLLER_PORT",
            s.tls_port: "MLCP_DEV_KAFKA_TLS_PORT",
        },
        "Kafka",
        "Stop it, or set MLCP_KAFKA_BOOTSTRAP=host:port to use a Kafka that is already running.",
    )


def prepare(s: Settings, progress: Progress) -> list[str]:
    """Every check and one-time step before launch; returns the broker's command line."""
    java = find_java()
    check_ports(s)
    libs = ensure_jars(s, progress)
    props = _write_configs(s, broker_secrets(s))
    _ensure_formatted(s, java, libs, props, progress)
    return [*_java_cmd(java, s, libs, SERVER_MAIN), str(props)]


def launch(s: Settings, cmd: list[str], progress: Progress) -> int:
    log = s.kafka_dir / "kafka.log"
    if log.exists():
        log.replace(log.with_name("kafka.log.1"))
    progress(f"starting Kafka {KAFKA_VERSION} on 127.0.0.1:{s.kafka_port} (log: {log})")
    pid = procs.spawn_detached(cmd, log, s.kafka_dir)
    state = {"pid": pid, "port": s.kafka_port, "controller_port": s.controller_port}
    _state_file(s).write_text(json.dumps(state))
    return pid


# A broker with many partitions on disk (a long-lived dev stack: every test run creates topics)
# spends minutes loading logs before it answers. It is not stuck while its log keeps growing, so
# the wait only gives up after STALL_S without progress, or after the hard cap.
STALL_S = 90.0
START_CAP_S = 900.0


def _partition_dirs(s: Settings) -> int:
    data = s.kafka_dir / "data"
    try:
        return sum(1 for entry in data.iterdir() if entry.is_dir() and "-" in entry.name)
    except OSError:
        return 0


def wait_ready(
    s: Settings,
    pid: int,
    timeout: float = STALL_S,
    progress: Progress | None = None,
    cap: float = START_CAP_S,
) -> None:
    """Wait until the broker answers a metadata request.

    Gives up after ``timeout`` seconds in which the broker's log did not grow, or after ``cap``.
    """
    log = s.kafka_dir / "kafka.log"
    started = time.monotonic()
    last_growth = started
    last_size = -1
    next_note = started + 15.0
    while True:
        if not procs.pid_alive(pid):
            _state_file(s).unlink(missing_ok=True)
            raise DevstackError(
                f"Kafka exited while starting. Last lines of {log}:\n{procs.tail(log)}"
            )
        problem = probe(f"127.0.0.1:{s.kafka_port}", timeout=2.0)
        if problem is None:
            return
        now = time.monotonic()
        size = log.stat().st_size if log.exists() else 0
        if size != last_size:
            last_size, last_growth = size, now
        if progress is not None and now >= next_note:
            next_note = now + 15.0
            progress(
                f"Kafka still starting after {now - started:.0f} s (loading "
                f"{_partition_dirs(s)} partitions from {s.kafka_dir / 'data'}; `mlcp-dev reset` "
                "wipes the dev data)"
            )
        if now - last_growth > timeout or now - started > cap:
            procs.terminate(pid, timeout=10)
            _state_file(s).unlink(missing_ok=True)
            why = (
                f"its log did not grow for {timeout:.0f} s"
                if now - last_growth > timeout
                else f"it did not answer within {cap:.0f} s"
            )
            raise DevstackError(
                f"Kafka did not answer a metadata request ({problem}); {why}. "
                f"Last lines of {log}:\n{procs.tail(log)}"
            )
        time.sleep(0.2)


def start(s: Settings, progress: Progress) -> bool:
    """Start the broker unless it already runs; True if this call started it."""
    state = running(s)
    if state is not None:
        if state["port"] != s.kafka_port or state["controller_port"] != s.controller_port:
            raise DevstackError(
                f"The dev Kafka already runs on 127.0.0.1:{state['port']} (controller "
                f"{state['controller_port']}), not on the ports asked for now: run `mlcp-dev down` "
                "first to move it."
            )
        wait_ready(s, state["pid"], progress=progress)
        return False
    pid = launch(s, prepare(s, progress), progress)
    wait_ready(s, pid, progress=progress)
    return True


def stop(s: Settings, *, kill: bool = False, timeout: float = 30.0) -> bool:
    """SIGTERM (a clean controlled shutdown) or SIGKILL (a crash); True if it was running."""
    state = running(s)
    if state is None:
        return False
    procs.terminate(state["pid"], timeout=timeout, kill=kill)
    _state_file(s).unlink(missing_ok=True)
    return True
