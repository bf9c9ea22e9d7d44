"""The dev stack's pure parts: settings, config rendering, preflight errors. No server starts."""

from __future__ import annotations

import re
import socket
import stat
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlcp.devstack import kafka, procs, security, stack
from mlcp.devstack.cli import app
from mlcp.devstack.config import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_DATABASE_URL,
    DevstackError,
    StackInfo,
    load_settings,
)

pytestmark = pytest.mark.unit


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """State and cache in tmp, free ports, no external servers: nothing touches a real stack."""
    for var in ("MLCP_KAFKA_BOOTSTRAP", "MLCP_DATABASE_URL", "JAVA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLCP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLCP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLCP_DEV_KAFKA_PORT", str(_free_port()))
    monkeypatch.setenv("MLCP_DEV_KAFKA_CONTROLLER_PORT", str(_free_port()))
    monkeypatch.setenv("MLCP_DEV_KAFKA_TLS_PORT", str(_free_port()))
    monkeypatch.setenv("MLCP_DEV_POSTGRES_PORT", str(_free_port()))
    return tmp_path


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with nothing on it: no java, no mvn."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    return bin_dir


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_defaults_without_env() -> None:
    s = load_settings({})
    assert s.bootstrap == DEFAULT_BOOTSTRAP == "127.0.0.1:9092"
    assert s.database_url == DEFAULT_DATABASE_URL == "postgresql://mlcp:mlcp@127.0.0.1:55432/mlcp"
    assert (s.external_bootstrap, s.external_database_url) == (None, None)
    assert s.state_dir == Path("~/.local/state/mlcp/devstack").expanduser()
    assert s.cache_dir == Path("~/.cache/mlcp").expanduser()


def test_env_vars_name_external_servers_and_win() -> None:
    s = load_settings(
        {
            "MLCP_KAFKA_BOOTSTRAP": "kafka-1:9092,kafka-2:9092",
            "MLCP_DATABASE_URL": "postgresql://u:p@db:5432/x",
            "MLCP_DEV_KAFKA_PORT": "19092",
        }
    )
    assert s.bootstrap == "kafka-1:9092,kafka-2:9092"
    assert s.database_url == "postgresql://u:p@db:5432/x"
    assert s.external_bootstrap
    assert s.external_database_url


def test_ports_and_dirs_move_with_env(tmp_path: Path) -> None:
    s = load_settings(
        {
            "MLCP_DEV_KAFKA_PORT": "19092",
            "MLCP_DEV_KAFKA_CONTROLLER_PORT": "19093",
            "MLCP_DEV_POSTGRES_PORT": "15432",
            "MLCP_STATE_DIR": str(tmp_path / "st"),
            "MLCP_CACHE_DIR": str(tmp_path / "ca"),
        }
    )
    assert s.bootstrap == "127.0.0.1:19092"
    assert s.database_url == "postgresql://mlcp:mlcp@127.0.0.1:15432/mlcp"
    assert s.state_dir == tmp_path / "st" / "devstack"
    assert s.kafka_dir == tmp_path / "st" / "devstack" / "kafka"
    assert kafka.jars_dir(s) == tmp_path / "ca" / f"kafka-{kafka.KAFKA_VERSION}" / "libs"


def test_empty_env_var_counts_as_unset() -> None:
    s = load_settings({"MLCP_KAFKA_BOOTSTRAP": "", "MLCP_DATABASE_URL": "  "})
    assert s.external_bootstrap is None
    assert s.database_url == DEFAULT_DATABASE_URL


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLCP_DEV_KAFKA_PORT": "kafka"}, "MLCP_DEV_KAFKA_PORT"),
        ({"MLCP_DEV_POSTGRES_PORT": "70000"}, "MLCP_DEV_POSTGRES_PORT"),
        ({"MLCP_DEV_KAFKA_PORT": "9093"}, "must differ"),
    ],
)
def test_bad_port_settings_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(DevstackError, match=message):
        load_settings(env)


def test_stack_info_env() -> None:
    info = StackInfo(bootstrap="h:1", database_url="postgresql://x")
    assert info.env() == {"MLCP_KAFKA_BOOTSTRAP": "h:1", "MLCP_DATABASE_URL": "postgresql://x"}
    # An external Kafka's credentials are the caller's: none are made up.
    assert info.env("svc-registry") == info.env()


def test_stack_info_env_of_a_principal(tmp_path: Path) -> None:
    info = StackInfo(
        bootstrap="127.0.0.1:1",
        database_url="postgresql://x",
        credentials_dir=tmp_path / "credentials",
        tls_bootstrap="127.0.0.1:2",
        ca_file=tmp_path / "ca.pem",
    )
    env = info.env("svc-registry")
    assert env["MLCP_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert env["MLCP_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["MLCP_KAFKA_USERNAME"] == "svc-registry"
    assert env["MLCP_KAFKA_PASSWORD_FILE"] == str(tmp_path / "credentials" / "svc-registry")
    assert "MLCP_KAFKA_PASSWORD" not in env  # the secret stays in its file
    tls = info.env("operator", tls=True)
    assert tls["MLCP_KAFKA_BOOTSTRAP"] == "127.0.0.1:2"
    assert tls["MLCP_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert tls["MLCP_KAFKA_CA_FILE"] == str(tmp_path / "ca.pem")


def test_server_properties(tmp_path: Path) -> None:
    s = load_settings(
        {
            "MLCP_DEV_KAFKA_PORT": "19092",
            "MLCP_DEV_KAFKA_CONTROLLER_PORT": "19093",
            "MLCP_DEV_KAFKA_TLS_PORT": "19094",
        }
    )
    secrets = kafka.BrokerSecrets(
        admin="admin",
        admin_password="pw-admin",
        controller_password="pw-controller",
        tls=security.TlsFiles(tmp_path / "ca.pem", tmp_path / "broker.p12", "pw-store"),
    )
    text = kafka.render_server_properties(s, secrets)
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["listeners"] == (
        "SASL_PLAINTEXT://127.0.0.1:19092,SASL_SSL://127.0.0.1:19094,CONTROLLER://127.0.0.1:19093"
    )
    # Nobody connects without credentials; nothing is allowed without an ACL.
    assert "PLAINTEXT:PLAINTEXT" not in props["listener.security.protocol.map"]
    assert props["listener.security.protocol.map"].count("SASL_") == 5
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin;User:controller"
    assert props["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert (
        'password="pw-admin"'
        in props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]
    )
    assert props["ssl.keystore.location"] == str(tmp_path / "broker.p12")
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert props["log.dirs"] == str(s.kafka_dir / "data")
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert int(props["group.min.session.timeout.ms"]) <= 1000
    assert props["auto.create.topics.enable"] == "false"
    assert props["num.partitions"] == "3"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1"


def test_pom_fetches_the_kafka_version_the_code_expects() -> None:
    pom = resources.files("mlcp.devstack").joinpath("kafka-pom.xml").read_text()
    found = re.search(r"<artifactId>kafka_2\.13</artifactId>\s*<version>([^<]+)</version>", pom)
    assert found is not None
    assert found.group(1) == kafka.KAFKA_VERSION


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "21-ea" 2023-09-19', 21),
        ('openjdk version "11.0.2" 2019-01-15 LTS', 11),
        ("no version here", None),
    ],
)
def test_java_major(output: str, major: int | None) -> None:
    assert kafka.java_major(output) == major


def test_missing_java_says_what_to_install(empty_path: Path) -> None:
    with pytest.raises(DevstackError) as caught:
        kafka.find_java()
    message = str(caught.value)
    assert "Java 17+" in message
    assert "no `java` on PATH" in message
    assert "apt-get install openjdk-17" in message
    assert "MLCP_KAFKA_BOOTSTRAP" in message


def test_old_java_is_refused(empty_path: Path) -> None:
    fake = empty_path / "java"
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(DevstackError, match=r'needs Java 17\+, but .* is openjdk version "11'):
        kafka.find_java()


def test_missing_maven_says_what_to_install(isolated: Path, empty_path: Path) -> None:
    with pytest.raises(
        DevstackError, match=r"Maven \(`mvn`\) is needed once.*apt-get install maven"
    ):
        kafka.ensure_jars(load_settings(), print)


def test_port_in_use_is_detected(listener: int) -> None:
    assert not procs.port_is_free(listener)
    assert procs.port_is_free(_free_port())


def test_port_in_use_error_names_port_and_variable(listener: int) -> None:
    with pytest.raises(DevstackError) as caught:
        procs.ensure_ports_free({listener: "MLCP_DEV_KAFKA_PORT"}, "Kafka", "hint")
    message = str(caught.value)
    assert f"127.0.0.1:{listener} is taken by" in message
    assert "MLCP_DEV_KAFKA_PORT=<port>" in message


def test_taken_kafka_port_stops_up_before_anything_starts(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, listener: int
) -> None:
    monkeypatch.setenv("MLCP_DEV_KAFKA_PORT", str(listener))
    monkeypatch.setattr(kafka, "find_java", lambda: "java")
    with pytest.raises(DevstackError, match=re.escape(f"127.0.0.1:{listener} is taken")):
        stack.up()
    assert not (isolated / "state" / "devstack" / "postgres").exists()
    assert not (isolated / "cache").exists()


def test_unreachable_external_kafka_is_a_clear_error(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLCP_KAFKA_BOOTSTRAP", f"127.0.0.1:{_free_port()}")
    with pytest.raises(DevstackError, match=r"MLCP_KAFKA_BOOTSTRAP=.* is set.*nothing answers"):
        stack.up()
    assert not (isolated / "state" / "devstack" / "kafka").exists()


def test_bad_bootstrap_string() -> None:
    with pytest.raises(DevstackError, match="host:port"):
        kafka.probe("no-port-here")


def test_cli_reports_missing_java_with_exit_code_2(isolated: Path, empty_path: Path) -> None:
    result = CliRunner().invoke(app, ["up"])
    assert result.exit_code == 2
    assert "error:" in result.output
    assert "Java 17+" in result.output
    assert "Traceback" not in result.output
    assert not (isolated / "state" / "devstack" / "postgres").exists()
