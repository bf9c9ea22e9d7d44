"""Where the test servers come from (tests/conftest.py), checked without a Docker engine:
PostgreSQL from testcontainers when an engine answers, Kafka from the dev stack's launcher
always (the authenticated bus), and every failure said on stderr instead of swallowed."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any

import docker  # type: ignore[import-untyped]
import pytest
import testcontainers.community.postgres as tc_postgres

import mlcp.devstack
from tests import conftest

pytestmark = pytest.mark.unit


@pytest.fixture
def launcher(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A stand-in for ``mlcp.devstack.up`` that records how it was asked."""
    calls: list[dict[str, Any]] = []

    def up(progress: Any = None, *, env: Any = None) -> SimpleNamespace:
        calls.append({"env": env})
        url = (env or {}).get("MLCP_DATABASE_URL") or "postgresql://devstack/mlcp"
        return SimpleNamespace(
            bootstrap="127.0.0.1:9092", database_url=url, credentials_dir=None,
            tls_bootstrap=None, ca_file=None,
        )  # fmt: skip

    for var in ("MLCP_KAFKA_BOOTSTRAP", "MLCP_DATABASE_URL", "MLCP_TEST_KAFKA_TLS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(mlcp.devstack, "up", up)
    return calls


def test_without_a_docker_engine_the_dev_stack_runs_both_and_says_why(
    monkeypatch: pytest.MonkeyPatch, launcher: list[dict[str, Any]], capsys: Any
) -> None:
    def refused(**_: Any) -> Any:
        raise docker.errors.DockerException("Error while fetching server API version")

    monkeypatch.setattr(docker, "from_env", refused)
    with contextlib.ExitStack() as stack:
        infra = conftest._locate_infra(stack)
    assert launcher == [{"env": None}]
    assert (infra.source, infra.postgres_container) == ("devstack", False)
    assert "no Docker engine (DockerException)" in capsys.readouterr().err


def test_a_container_that_fails_is_reported_and_the_dev_stack_takes_over(
    monkeypatch: pytest.MonkeyPatch, launcher: list[dict[str, Any]], capsys: Any
) -> None:
    monkeypatch.setattr(docker, "from_env", lambda **_: SimpleNamespace(ping=lambda: True))

    class NoImage:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("pull access denied for postgres")

    monkeypatch.setattr(tc_postgres, "PostgresContainer", NoImage)
    with contextlib.ExitStack() as stack:
        infra = conftest._locate_infra(stack)
    assert launcher == [{"env": None}]
    assert infra.postgres_container is False
    err = capsys.readouterr().err
    assert "could not start postgres:17" in err
    assert "pull access denied" in err


def test_with_an_engine_postgres_runs_in_a_container_and_kafka_from_the_launcher(
    monkeypatch: pytest.MonkeyPatch, launcher: list[dict[str, Any]]
) -> None:
    monkeypatch.setattr(docker, "from_env", lambda **_: SimpleNamespace(ping=lambda: True))
    lifecycle: list[str] = []

    class Postgres:
        def __init__(self, image: str, **options: Any) -> None:
            assert image == "postgres:17"
            assert options["driver"] is None  # a plain postgresql:// URL, as asyncpg takes
            self.options = options

        def __enter__(self) -> Postgres:
            lifecycle.append("started")
            return self

        def __exit__(self, *_: object) -> None:
            lifecycle.append("stopped")

        def get_connection_url(self) -> str:
            return "postgresql://mlcp:mlcp@127.0.0.1:49153/mlcp"

    monkeypatch.setattr(tc_postgres, "PostgresContainer", Postgres)
    with contextlib.ExitStack() as stack:
        infra = conftest._locate_infra(stack)
        assert lifecycle == ["started"]
    assert lifecycle == ["started", "stopped"], "the container lives as long as the session"
    [call] = launcher
    assert call["env"]["MLCP_DATABASE_URL"] == "postgresql://mlcp:mlcp@127.0.0.1:49153/mlcp"
    assert infra.database_url == "postgresql://mlcp:mlcp@127.0.0.1:49153/mlcp"
    assert (infra.source, infra.postgres_container) == ("devstack", True)
