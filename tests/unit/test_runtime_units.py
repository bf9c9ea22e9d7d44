"""Unit tests of mlcp.runtime's pure parts: settings, DLQ headers, backoff, migrations files,
JSON logs, the health app and the service entry point. No servers."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlcp.runtime.consumer import DurableConsumer
from mlcp.runtime.dlq import (
    H_ATTEMPTS,
    H_CONSUMER,
    H_ERROR,
    H_OFFSET,
    H_PARTITION,
    H_REASON,
    H_TIME,
    H_TOPIC,
    MAX_ERROR_CHARS,
    DeadLetter,
)
from mlcp.runtime.entry import EXIT_CONFIG, run_service
from mlcp.runtime.health import health_app
from mlcp.runtime.logs import JsonFormatter, event_context
from mlcp.runtime.metrics import RuntimeMetrics
from mlcp.runtime.migrations import (
    MigrationError,
    load_migrations,
    runtime_migrations,
    service_migrations_dir,
)
from mlcp.runtime.settings import (
    DEFAULT_DATABASE_URL,
    DEFAULT_KAFKA_BOOTSTRAP,
    ConfigurationError,
    Settings,
    load_settings,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No MLCP_* variable from the caller's shell (the test run itself exports some)."""
    for name in list(os.environ):
        if name.startswith("MLCP_"):
            monkeypatch.delenv(name)
    return monkeypatch


# --------------------------------------------------------------------------- settings


def test_settings_defaults_follow_design(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert DEFAULT_KAFKA_BOOTSTRAP == "127.0.0.1:9092"
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.database_url == DEFAULT_DATABASE_URL
    assert s.database_url.startswith("postgresql://")
    assert s.config is None
    assert s.slack_webhook_url is None
    assert s.wecom_webhook_url is None
    assert s.registry_url.startswith("http")
    assert s.topic_prefix == ""
    assert s.handler_max_attempts == 5
    assert s.outbox_poll_interval_s == 1.0
    assert s.log_level == "INFO"


def test_settings_read_the_design_names_from_the_environment(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("MLCP_KAFKA_BOOTSTRAP", "kafka-1:9093,kafka-2:9093")
    clean_env.setenv("MLCP_DATABASE_URL", "postgres://u:p@db:5432/x")
    clean_env.setenv("MLCP_CONFIG", "/etc/mlcp/platform.yaml")
    clean_env.setenv("MLCP_REGISTRY_URL", "http://registry:8081")
    clean_env.setenv("MLCP_SLACK_WEBHOOK_URL", "https://hooks.example/slack-secret")
    clean_env.setenv("MLCP_WECOM_WEBHOOK_URL", "https://hooks.example/wecom-secret")
    clean_env.setenv("MLCP_ARTIFACT_ROOT", "/data/artifacts")
    clean_env.setenv("MLCP_HTTP_PORT", "8090")
    clean_env.setenv("MLCP_HANDLER_MAX_ATTEMPTS", "7")
    clean_env.setenv("MLCP_TOPIC_PREFIX", "tenant-a.")

    s = load_settings()

    assert s.kafka_bootstrap == "kafka-1:9093,kafka-2:9093"
    assert s.database_url == "postgres://u:p@db:5432/x"
    assert s.config == Path("/etc/mlcp/platform.yaml")
    assert s.registry_url == "http://registry:8081"
    assert s.slack_webhook_url is not None
    assert s.slack_webhook_url.get_secret_value() == "https://hooks.example/slack-secret"
    assert "slack-secret" not in repr(s)  # webhook URLs are secrets
    assert s.wecom_webhook_url is not None
    assert s.wecom_webhook_url.get_secret_value() == "https://hooks.example/wecom-secret"
    assert s.artifact_root == Path("/data/artifacts")
    assert s.http_port == 8090
    assert s.handler_max_attempts == 7
    assert s.topic_prefix == "tenant-a."


def test_empty_environment_values_are_ignored(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MLCP_KAFKA_BOOTSTRAP", "")
    clean_env.setenv("MLCP_DATABASE_URL", "")
    clean_env.setenv("MLCP_HTTP_PORT", "")
    clean_env.setenv("MLCP_LOG_LEVEL", "")

    s = load_settings()

    assert s.kafka_bootstrap == DEFAULT_KAFKA_BOOTSTRAP
    assert s.database_url == DEFAULT_DATABASE_URL
    assert s.http_port is None
    assert s.log_level == "INFO"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MLCP_HTTP_PORT", "99999"),
        ("MLCP_HTTP_PORT", "eighty"),
        ("MLCP_DATABASE_URL", "mysql://127.0.0.1/mlcp"),
        ("MLCP_LOG_LEVEL", "LOUD"),
        ("MLCP_LOG_FORMAT", "xml"),
        ("MLCP_HANDLER_MAX_ATTEMPTS", "0"),
        ("MLCP_TOPIC_PREFIX", "bad prefix/"),
        ("MLCP_MAX_RECORD_BYTES", str(2 * 1024 * 1024)),  # over the contract's 1 MiB
        ("MLCP_MAX_JSON_DEPTH", "5000"),  # past what the parsers can recurse
    ],
)
def test_bad_values_raise_configuration_error_naming_the_variable(
    clean_env: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert variable in message
    # Only the bad variable is reported.
    others = [line for line in message.splitlines()[1:] if variable not in line]
    assert others == []
    assert caught.value.__cause__ is None  # no pydantic stack trace chained to it


def test_every_bad_variable_is_reported_at_once(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MLCP_HTTP_PORT", "99999")
    clean_env.setenv("MLCP_LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "MLCP_HTTP_PORT" in str(caught.value)
    assert "MLCP_LOG_LEVEL" in str(caught.value)


def test_configuration_error_of_a_valid_looking_setting_hides_the_database_password(
    clean_env: pytest.MonkeyPatch,
) -> None:
    # A bad port next to a good URL: the URL is not part of the report at all.
    clean_env.setenv("MLCP_DATABASE_URL", "postgresql://mlcp:hunter2-pw@db:5432/mlcp")
    clean_env.setenv("MLCP_HTTP_PORT", "99999")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "MLCP_HTTP_PORT" in str(caught.value)
    assert "hunter2-pw" not in str(caught.value)


def test_configuration_error_for_a_bad_database_url_hides_its_password(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("MLCP_DATABASE_URL", "mysql://mlcp:hunter2-pw@db:3306/mlcp")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "MLCP_DATABASE_URL" in str(caught.value)
    assert "hunter2-pw" not in str(caught.value)


def test_topic_is_the_event_type_behind_the_prefix(clean_env: pytest.MonkeyPatch) -> None:
    assert Settings().topic("data.arrived") == "data.arrived"
    assert Settings(topic_prefix="t123.").topic("data.arrived") == "t123.data.arrived"
    clean_env.setenv("MLCP_TOPIC_PREFIX", "tenant-b.")
    assert load_settings().topic("model.promoted") == "tenant-b.model.promoted"


# --------------------------------------------------------------------------- dead letters


def letter(**overrides: Any) -> DeadLetter:
    fields: dict[str, Any] = {
        "topic": "data.arrived",
        "partition": 2,
        "offset": 41,
        "key": b"ds",
        "value": b"{not json",
        "headers": [("traceparent", b"00-abc-def-01"), ("content-type", b"application/json")],
        "consumer": "trainer",
        "reason": "invalid_json",
        "error": "Expecting property name enclosed in double quotes",
        "attempts": 3,
    }
    fields.update(overrides)
    return DeadLetter(**fields)


def test_dead_letter_headers_keep_the_originals_and_add_the_reason() -> None:
    before = int(time.time() * 1000)
    headers = letter().record_headers()
    after = int(time.time() * 1000)

    # Original headers first, untouched and in order.
    assert headers[:2] == [
        ("traceparent", b"00-abc-def-01"),
        ("content-type", b"application/json"),
    ]
    added = dict(headers[2:])
    assert added[H_REASON] == b"invalid_json"
    assert added[H_ERROR] == b"Expecting property name enclosed in double quotes"
    assert added[H_TOPIC] == b"data.arrived"
    assert added[H_PARTITION] == b"2"
    assert added[H_OFFSET] == b"41"
    assert added[H_CONSUMER] == b"trainer"
    assert added[H_ATTEMPTS] == b"3"
    assert before <= int(added[H_TIME]) <= after
    assert all(isinstance(v, bytes) for _, v in headers)


def test_dead_letter_headers_replace_stale_dlq_headers() -> None:
    # A record replayed from a DLQ carries the previous failure's headers.
    stale = [
        ("x-app", b"1"),
        (H_REASON, b"handler_failed"),
        (H_ATTEMPTS, b"5"),
        (H_ERROR, b"old error"),
    ]
    headers = letter(headers=stale, reason="invalid_data", attempts=0).record_headers()
    names = [k for k, _ in headers]
    assert ("x-app", b"1") in headers
    assert names.count(H_REASON) == 1
    assert names.count(H_ATTEMPTS) == 1
    assert names.count(H_ERROR) == 1
    assert dict(headers)[H_REASON] == b"invalid_data"
    assert dict(headers)[H_ATTEMPTS] == b"0"
    assert b"old error" not in dict(headers).values()


def test_dead_letter_error_is_truncated() -> None:
    headers = dict(letter(error="E" * (MAX_ERROR_CHARS * 3)).record_headers())
    assert headers[H_ERROR] == b"E" * MAX_ERROR_CHARS


# --------------------------------------------------------------------------- consumer


def consumer(**settings: Any) -> DurableConsumer:
    def no_pool() -> Any:
        raise AssertionError("the pool is not used here")

    return DurableConsumer(
        service="svc",
        settings=Settings(**settings),
        metrics=RuntimeMetrics("svc"),
        pool=no_pool,
    )


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap_with_jitter() -> None:
    c = consumer(retry_initial_backoff_s=0.1, retry_max_backoff_s=1.0)
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for attempt, ceiling in enumerate(ceilings, start=1):
        delays = [c._backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, min(delays))
        assert len(set(delays)) > 100, "jittered: instances do not retry in lockstep"
    assert c._backoff(60) <= 1.0


def test_backoff_stays_capped_after_a_long_outage() -> None:
    c = consumer()
    cap = c._settings.retry_max_backoff_s
    assert cap / 2 <= c._backoff(2000) <= cap


def test_two_handlers_for_one_event_type_are_refused() -> None:
    c = consumer(topic_prefix="p.")

    async def first(*_: Any) -> None: ...

    async def second(*_: Any) -> None: ...

    c.add("data.arrived", first)
    c.add("run.finished", first)  # one handler may serve several types
    with pytest.raises(ValueError, match=r"two handlers for data\.arrived"):
        c.add("data.arrived", second)
    assert c.topics == ["p.data.arrived", "p.run.finished"]
    assert c.inbox_name("data.arrived") == "svc:data.arrived"


# --------------------------------------------------------------------------- migrations files


def test_load_migrations_sorts_by_name_and_ignores_other_files(tmp_path: Path) -> None:
    (tmp_path / "010_third.sql").write_text("SELECT 3;")
    (tmp_path / "001_first.sql").write_text("SELECT 1;")
    (tmp_path / "002_second_step.sql").write_text("SELECT 2;")
    (tmp_path / "README.md").write_text("not a migration")

    found = load_migrations(tmp_path)

    assert [m.name for m in found] == ["001_first.sql", "002_second_step.sql", "010_third.sql"]
    assert found[0].sql == "SELECT 1;"
    assert found[0].checksum == hashlib.sha256(b"SELECT 1;").hexdigest()


@pytest.mark.parametrize(
    "name",
    ["1_short.sql", "001-dash.sql", "001_Upper.sql", "001_.sql", "abc_x.sql", "001_a b.sql"],
)
def test_load_migrations_rejects_badly_named_files(tmp_path: Path, name: str) -> None:
    (tmp_path / "001_ok.sql").write_text("SELECT 1;")
    (tmp_path / name).write_text("SELECT 2;")
    with pytest.raises(MigrationError, match="NNN_description"):
        load_migrations(tmp_path)


def test_load_migrations_of_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        load_migrations(tmp_path / "nope")


def test_load_migrations_never_orders_1000_before_999(tmp_path: Path) -> None:
    (tmp_path / "999_before.sql").write_text("SELECT 1;")
    (tmp_path / "1000_after.sql").write_text("SELECT 2;")
    try:
        found = load_migrations(tmp_path)
    except MigrationError:
        return  # refusing the ambiguity is fine too
    assert [m.name for m in found] == ["999_before.sql", "1000_after.sql"]


def test_runtime_migrations_are_the_inbox_and_outbox() -> None:
    found = runtime_migrations()
    assert [m.name for m in found] == [
        "000_inbox_outbox.sql",
        "000_inbox_outbox_002_batch_inbox.sql",  # applied after the first, as named
    ]
    assert "mlcp_inbox" in found[0].sql
    assert "mlcp_outbox" in found[0].sql
    assert "mlcp_batch_inbox" in found[1].sql


def test_service_migrations_dir_finds_the_service_root_folder() -> None:
    # The app module's file, without importing the whole service.
    spec = importlib.util.find_spec("mlcp.registry.app")
    assert spec is not None
    assert spec.origin is not None
    app_file = spec.origin

    found = service_migrations_dir(app_file)
    assert found is not None
    assert found.is_dir()
    assert found.name == "migrations"
    assert found.parent.name == "registry"
    # services/registry/src/mlcp/registry/app.py -> services/registry/migrations
    assert found == Path(app_file).resolve().parents[3] / "migrations"


def test_service_migrations_dir_prefers_the_package_folder(tmp_path: Path) -> None:
    package = tmp_path / "svc" / "src" / "mlcp" / "svc"
    package.mkdir(parents=True)
    app = package / "app.py"
    app.write_text("")
    assert service_migrations_dir(str(app)) is None

    (tmp_path / "svc" / "migrations").mkdir()
    assert service_migrations_dir(str(app)) == (tmp_path / "svc" / "migrations").resolve()

    (package / "migrations").mkdir()  # the wheel layout wins
    assert service_migrations_dir(str(app)) == (package / "migrations").resolve()


# --------------------------------------------------------------------------- logs


def log_record(msg: str = "hello %s", args: tuple[Any, ...] = ("world",)) -> logging.LogRecord:
    return logging.LogRecord("mlcp.test", logging.WARNING, __file__, 1, msg, args, None)


def test_json_formatter_writes_one_object_per_line() -> None:
    line = JsonFormatter("trainer").format(log_record())
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "warning"
    assert entry["service"] == "trainer"
    assert entry["logger"] == "mlcp.test"
    assert entry["msg"] == "hello world"
    assert "event_id" not in entry
    assert "correlation_id" not in entry


def test_json_formatter_carries_the_event_inside_event_context() -> None:
    formatter = JsonFormatter("trainer")
    with event_context("evt-1", "corr-9"):
        inside = json.loads(formatter.format(log_record()))
        with event_context("evt-2", None):
            nested = json.loads(formatter.format(log_record()))
        back = json.loads(formatter.format(log_record()))
    after = json.loads(formatter.format(log_record()))

    assert (inside["event_id"], inside["correlation_id"]) == ("evt-1", "corr-9")
    assert nested["event_id"] == "evt-2"
    assert "correlation_id" not in nested
    assert (back["event_id"], back["correlation_id"]) == ("evt-1", "corr-9")
    assert "event_id" not in after
    assert "correlation_id" not in after


def test_json_formatter_keeps_multiline_messages_and_exceptions_on_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "mlcp.test", logging.ERROR, __file__, 1, "failed:\n%s", ("détail",), sys.exc_info()
        )
    line = JsonFormatter("svc").format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["msg"] == "failed:\ndétail"
    assert "ValueError: boom" in entry["exc"]


@pytest.fixture
def non_utc_timezone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("non_utc_timezone")
def test_json_formatter_timestamp_is_utc() -> None:
    record = log_record()
    entry = json.loads(JsonFormatter("svc").format(record))
    expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    assert entry["ts"] == f"{expected}.{int(record.msecs):03d}Z"


# --------------------------------------------------------------------------- health


async def get(app: Any, path: str) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://svc"
    ) as client:
        return await client.get(path)


async def ok() -> bool:
    return True


async def not_ok() -> bool:
    return False


async def raises() -> bool:
    raise ConnectionRefusedError("database is away")


async def hangs() -> bool:
    await asyncio.Event().wait()
    return True


async def test_healthz_answers_without_running_checks() -> None:
    app = health_app("svc", RuntimeMetrics("svc").registry, {"hang": hangs, "bad": raises})
    response = await get(app, "/healthz")
    assert response.status_code == 200
    assert response.json() == {"service": "svc", "status": "up"}


async def test_readyz_is_200_when_every_check_passes() -> None:
    app = health_app("svc", RuntimeMetrics("svc").registry, {"db": ok, "kafka": ok})
    response = await get(app, "/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "service": "svc",
        "ready": True,
        "checks": {"db": True, "kafka": True},
    }


@pytest.mark.parametrize("failing", [not_ok, raises, hangs], ids=["false", "raises", "hangs"])
async def test_readyz_is_503_naming_the_failing_check(failing: Any) -> None:
    app = health_app(
        "svc", RuntimeMetrics("svc").registry, {"db": ok, "kafka": failing}, timeout_s=0.2
    )
    started = time.monotonic()
    response = await get(app, "/readyz")
    assert time.monotonic() - started < 5  # the hanging check is cut off by the timeout
    assert response.status_code == 503
    assert response.json() == {
        "service": "svc",
        "ready": False,
        "checks": {"db": True, "kafka": False},
    }


async def test_metrics_are_in_prometheus_text_format() -> None:
    metrics = RuntimeMetrics("svc")
    metrics.outbox_published.inc(3)
    metrics.events_handled.labels("data.arrived", "applied").inc()
    response = await get(health_app("svc", metrics.registry, {}), "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    body = response.text
    assert "# TYPE mlcp_svc_outbox_published_total counter" in body
    assert "mlcp_svc_outbox_published_total 3.0" in body
    assert 'mlcp_svc_events_handled_total{outcome="applied",topic="data.arrived"} 1.0' in body


# --------------------------------------------------------------------------- entry point


def test_run_service_exits_2_when_the_build_refuses_the_configuration(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[Settings] = []

    def build(settings: Settings) -> Any:
        seen.append(settings)
        raise ConfigurationError("MLCP_CONFIG: models.churn.label: field required")

    with pytest.raises(SystemExit) as caught:
        run_service(build)

    assert caught.value.code == EXIT_CONFIG == 2
    assert len(seen) == 1
    err = capsys.readouterr().err
    assert "MLCP_CONFIG: models.churn.label: field required" in err
    assert "Traceback" not in err


def test_run_service_exits_2_on_bad_environment_before_building(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("MLCP_HTTP_PORT", "99999")

    def build(settings: Settings) -> Any:
        raise AssertionError("build must not run with invalid settings")

    with pytest.raises(SystemExit) as caught:
        run_service(build)

    assert caught.value.code == 2
    assert "MLCP_HTTP_PORT" in capsys.readouterr().err


def test_run_service_runs_what_build_returns(clean_env: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    class FakeRuntime:
        def run(self) -> None:
            ran.append("run")

    run_service(lambda _settings: FakeRuntime())  # type: ignore[arg-type,return-value]
    assert ran == ["run"]


def test_http_listener_is_a_tcp_socket_so_asyncio_sets_nodelay() -> None:
    """asyncio enables TCP_NODELAY only when sock.proto is IPPROTO_TCP; without it every
    keep-alive response stalls ~40 ms on the client's delayed ACK."""
    import socket

    from mlcp.runtime.service import ServiceRuntime

    runtime = ServiceRuntime("nodelay", default_port=0, settings=Settings(http_port=0))
    listener = runtime._bind_http()
    try:
        assert listener.proto == socket.IPPROTO_TCP
    finally:
        listener.close()


def test_secret_like_values_are_never_echoed_in_configuration_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import Field, SecretStr
    from pydantic_settings import BaseSettings, SettingsConfigDict

    from mlcp.runtime.settings import load_env_settings

    class Knobs(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="MLCP_TEST_")
        bootstrap_token: SecretStr = Field(min_length=32)

    monkeypatch.setenv("MLCP_TEST_BOOTSTRAP_TOKEN", "short-secret-value")
    with pytest.raises(ConfigurationError) as caught:
        load_env_settings(Knobs)
    assert "MLCP_TEST_BOOTSTRAP_TOKEN" in str(caught.value)
    assert "short-secret-value" not in str(caught.value)


async def test_a_stop_step_that_never_ends_is_cut_after_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlcp.runtime import service
    from mlcp.runtime.service import ServiceRuntime

    monkeypatch.setattr(service, "STOP_STEP_TIMEOUT_S", 0.05)
    runtime = ServiceRuntime.__new__(ServiceRuntime)  # _bounded needs no state
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    assert not await runtime._bounded("a commit the broker keeps refusing", never)
    assert never.cancelled()

    async def quick() -> None:
        await asyncio.sleep(0)

    assert await runtime._bounded("a quick step", quick())
