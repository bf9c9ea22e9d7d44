"""docker-compose.yml, the Dockerfile and deploy/ checked against the code they deploy.

No Docker engine is needed: the files are parsed and compared with what the packages define —
settings names, service packages and ports, metric names — so renaming one side breaks this test
instead of a `docker compose up` nobody ran.
"""

from __future__ import annotations

import functools
import http.server
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic_settings import BaseSettings

from mlcp.runtime.settings import DEFAULT_DATABASE_URL, DEFAULT_KAFKA_BOOTSTRAP, Settings
from tests.deploy_queries import PROMETHEUS_OWN, names_in

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
DOCKER_COMPOSE = shutil.which("docker-compose")
GRAFANA_DIR = ROOT / "deploy" / "grafana"

SERVICES = ("registry", "trainer", "gatekeeper", "monitor", "notifier")
# What a user needs from the host, and nothing more: the registry's API (CLI, inference
# services), Grafana, and Kafka and PostgreSQL where the Settings defaults point.
PUBLISHED = {"registry": {8081}, "grafana": {3000}, "kafka": {9092}, "postgres": {55432}}
ENV_PREFIX = str(Settings.model_config.get("env_prefix", ""))
# The runtime's series a dashboard narrowed by $service shows for every service.
REQUIRED_DASHBOARD_METRICS = (
    "events_handled_total",
    "handler_duration_seconds_bucket",
    "dead_lettered_total",
    "outbox_pending_rows",
    "outbox_published_total",
)


# -- reading the files ------------------------------------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def compose_services() -> dict[str, dict[str, Any]]:
    services = compose().get("services")
    assert isinstance(services, dict), "docker-compose.yml has no services"
    return services


def service(name: str) -> dict[str, Any]:
    services = compose_services()
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name]


@functools.cache
def dot_env() -> dict[str, str]:
    """The variables of ``.env`` as a user makes it: ``cp deploy/.env.example .env``."""
    found = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def interpolate(value: str) -> str:
    """``value`` as Compose resolves it with .env from deploy/.env.example and nothing else."""

    def resolve(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        expression = match.group(1) or match.group(2)
        name = re.match(r"\w+", expression)
        assert name is not None, expression
        if dot_env().get(name.group(0)):
            return dot_env()[name.group(0)]
        for operator in (":-", "-"):
            if operator in expression:
                return expression.split(operator, 1)[1]
        if ":?" in expression or "?" in expression:
            raise AssertionError(f"{value!r} requires {name.group(0)}, not in deploy/.env.example")
        return ""

    return re.sub(r"\$\$|\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", resolve, value)


def environment(name: str) -> dict[str, str | None]:
    """A service's environment; None for a variable passed through from the host."""
    raw = service(name).get("environment") or {}
    if isinstance(raw, list):
        pairs = [item.split("=", 1) if "=" in item else [item, None] for item in raw]
        raw = dict(pairs)
    resolved: dict[str, str | None] = {}
    for key, value in raw.items():
        if value is None:
            resolved[key] = None
        elif isinstance(value, bool):  # YAML true → "true", as Compose passes it
            resolved[key] = str(value).lower()
        else:
            resolved[key] = interpolate(str(value))
    return resolved


def ports(name: str) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each port a service publishes."""
    published = []
    for entry in service(name).get("ports") or []:
        if isinstance(entry, dict):
            host_ip = str(entry.get("host_ip", ""))
            host_port, target = int(entry["published"]), int(entry["target"])
        else:
            parts = str(entry).split("/")[0].split(":")
            assert len(parts) == 3, f"{name}: port {entry!r} does not name its host ip"
            host_ip, host_port, target = parts[0], int(parts[1]), int(parts[2])
        published.append((host_ip, host_port, target))
    return published


def exposed(name: str) -> set[int]:
    """Ports a service declares for the compose network (``expose``) or publishes."""
    declared = {int(str(port).split("/")[0]) for port in service(name).get("expose") or []}
    return declared | {target for _ip, _hp, target in ports(name)}


def volumes(name: str) -> list[tuple[str, str]]:
    """(source, target) of each volume of a service: a ./path for binds, a name for volumes."""
    mounts = []
    for entry in service(name).get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append((str(entry["source"]), str(entry["target"])))
        else:
            source, target = str(entry).split(":")[:2]
            mounts.append((source, target))
    return mounts


def depends_on(name: str) -> dict[str, str]:
    raw = service(name).get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {target: spec.get("condition", "service_started") for target, spec in raw.items()}


def host_path(source: str) -> Path:
    return (COMPOSE_FILE.parent / source).resolve()


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def container_path_to_host(name: str, path: str) -> Path | None:
    """The host file behind ``path`` inside a container of ``name``, through its bind mounts."""
    for source, target in volumes(name):
        if is_bind(source) and (path == target or path.startswith(target.rstrip("/") + "/")):
            return host_path(source) / path[len(target) :].lstrip("/")
    return None


def built_from_dockerfile(name: str) -> bool:
    build = service(name).get("build")
    return isinstance(build, dict) and (build.get("dockerfile") or "Dockerfile") == DOCKERFILE.name


def build_args(name: str) -> dict[str, str]:
    args = service(name)["build"].get("args") or {}
    if isinstance(args, list):
        args = dict(item.split("=", 1) for item in args)
    return {key: str(value) for key, value in args.items()}


def app_module(name: str) -> ModuleType:
    return importlib.import_module(f"mlcp.{name}.app")


@functools.cache
def prometheus() -> dict[str, Any]:
    data = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert isinstance(data, dict)
    return data


def scrape_targets() -> dict[str, tuple[str, str, dict[str, str]]]:
    """target → (job name, metrics path, labels) over every static scrape config."""
    targets = {}
    for job in prometheus().get("scrape_configs") or []:
        for static in job.get("static_configs") or []:
            for target in static.get("targets") or []:
                assert target not in targets, f"{target} is scraped twice"
                path = job.get("metrics_path", "/metrics")
                targets[target] = (job["job_name"], path, static.get("labels") or {})
    return targets


def dashboards() -> list[Path]:
    found = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
    assert found, "no Grafana dashboard under deploy/grafana/dashboards"
    return found


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels") or [])  # collapsed rows nest their panels


def grafana_datasources() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted((GRAFANA_DIR / "provisioning" / "datasources").glob("*.y*ml")):
        found += yaml.safe_load(path.read_text()).get("datasources") or []
    return found


# -- what the code defines --------------------------------------------------------------------


# Series suffixes a metric family of each type serves.
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
}
# Labels every series gets from the scrape (deploy/prometheus/prometheus.yml), not from the code.
SCRAPE_LABELS = frozenset({"job", "instance", "service"})


class _AnyLabel(frozenset[str]):
    """The labels of a series whose collector does not declare them: every name."""

    def __contains__(self, _name: object) -> bool:
        return True

    def __or__(self, _other: object) -> _AnyLabel:  # type: ignore[override]
        return self


ANY_LABEL = _AnyLabel()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, frozenset[str]]]:
    """service → {series name → its label names (None: not known)}: what each service's
    ``/metrics`` serves, read from its composition root built as ``mlcp-<service>`` builds it
    with the compose example config (nothing is started: no Kafka, no PostgreSQL)."""
    served: dict[str, dict[str, frozenset[str]]] = {}
    with pytest.MonkeyPatch.context() as env:
        # The registry's audit keyring, created for this build only.
        env.setenv(f"{ENV_PREFIX}AUDIT_KEY_FILE", str(tmp_path_factory.mktemp("audit") / "key"))
        env.setenv(f"{ENV_PREFIX}AUDIT_KEY_CREATE", "true")
        # The notifier needs one usable channel (deploy/.env.example sets it for compose).
        env.setenv(f"{ENV_PREFIX}SLACK_WEBHOOK_URL", "https://hooks.example.invalid/x")
        env.delenv(f"{ENV_PREFIX}WECOM_WEBHOOK_URL", raising=False)
        settings = Settings(config=str(ROOT / "deploy" / "mlcp.example.yaml"))
        for name in SERVICES:
            registry = app_module(name).build(settings).metrics.registry
            series: dict[str, frozenset[str]] = {}
            for collector in list(registry._collector_to_names):  # the registered collectors
                declared = getattr(collector, "_labelnames", None)  # prometheus_client's own
                for family in collector.collect():
                    sampled = {key for sample in family.samples for key in sample.labels}
                    # A custom collector with no sample yet does not tell its labels: any.
                    labels = (
                        ANY_LABEL
                        if declared is None and not sampled
                        else frozenset({*(declared or ()), *sampled} - {"le", "quantile"})
                    )
                    for suffix in SERIES_SUFFIXES.get(family.type, ("",)):
                        series[family.name + suffix] = labels
            served[name] = series
    return served


def service_of(series: str) -> str:
    """The service whose code serves ``series`` (``mlcp_<service>_…``)."""
    owner = series.split("_")[1] if series.startswith("mlcp_") else ""
    assert owner in SERVICES, f"{series}: no mlcp service is named in it"
    return owner


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names matched on) for every ``metric{…}`` selector of ``expr``."""
    found = []
    for metric, matchers in re.findall(r"\b(mlcp_\w+)\s*\{([^}]*)\}", expr):
        found.append((metric, set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))))
    return found


def test_exported_series_come_from_each_services_own_code(
    exported: dict[str, dict[str, frozenset[str]]],
) -> None:
    """The fixture reads what it claims: the runtime's series for all, each service's own."""
    for name in SERVICES:
        assert f"mlcp_{name}_events_handled_total" in exported[name]
        assert exported[name][f"mlcp_{name}_events_handled_total"] == {"topic", "outcome"}
        assert all(s.startswith((f"mlcp_{name}_", "faststream_")) for s in exported[name])
    assert "mlcp_notifier_deliveries_total" in exported["notifier"]
    assert "mlcp_monitor_prediction_latency_ms_bucket" in exported["monitor"]
    assert "mlcp_gatekeeper_gate_outcomes_total" not in exported["monitor"]


# -- the five services ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_built_from_the_dockerfile_with_its_package(name: str) -> None:
    spec = service(name)
    assert built_from_dockerfile(name), f"{name} is not built from {DOCKERFILE.name}"
    context = host_path(spec["build"].get("context", "."))
    assert context == ROOT, f"{name}: the build context must be the workspace root"
    assert build_args(name).get("SERVICE") == name
    assert importlib.util.find_spec(f"mlcp.{name}.__main__") is not None, f"mlcp.{name}.__main__"
    assert name == app_module(name).SERVICE


def test_each_service_image_has_its_own_tag() -> None:
    # Five builds with different SERVICE args under one tag would overwrite each other.
    tags = [service(name).get("image") for name in SERVICES]
    assert None not in tags, "give each built service an image tag"
    assert len(set(tags)) == len(tags), tags


@pytest.mark.parametrize("name", SERVICES)
def test_http_port_is_the_code_default_exposed_and_scraped(name: str) -> None:
    port = app_module(name).DEFAULT_PORT
    env = environment(name)
    assert env.get(f"{ENV_PREFIX}HTTP_PORT") == str(port)
    assert env.get(f"{ENV_PREFIX}HTTP_HOST") == "0.0.0.0", "a container must listen beyond loopback"
    assert port in exposed(name), f"{name}: declare port {port} (expose or ports)"
    if name in PUBLISHED:
        assert ("127.0.0.1", port, port) in ports(name), f"{name}: publish 127.0.0.1:{port}:{port}"
    target = scrape_targets().get(f"{name}:{port}")
    assert target is not None, f"Prometheus does not scrape {name}:{port}"
    _job, path, labels = target
    assert path == "/metrics"
    assert labels.get("service") == name


# -- settings ---------------------------------------------------------------------------------


def services_with_mlcp_env() -> list[str]:
    return [
        name
        for name in compose_services()
        if any(key.startswith(ENV_PREFIX) for key in environment(name))
    ]


BUS_INIT = "bus-init"


def test_the_services_are_the_ones_using_mlcp_settings() -> None:
    assert ENV_PREFIX == "MLCP_"
    assert sorted(services_with_mlcp_env()) == sorted([*SERVICES, BUS_INIT])


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_reaches_the_bus_as_its_own_principal(name: str) -> None:
    env = environment(name)
    assert env[f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert env[f"{ENV_PREFIX}KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env[f"{ENV_PREFIX}KAFKA_USERNAME"] == f"svc-{name}"
    assert env[f"{ENV_PREFIX}KAFKA_PASSWORD_FILE"] == f"/run/mlcp/bus/svc-{name}"
    assert depends_on(name).get(BUS_INIT) == "service_completed_successfully"
    mounts = service(name).get("volumes", [])
    assert "bus-credentials:/run/mlcp/bus:ro" in mounts


def test_the_broker_denies_by_default_and_bus_init_applies_the_acl_file() -> None:
    env = {key: value or "" for key, value in environment("kafka").items()}
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    protocols = dict(
        item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}, "no listener without authentication"
    init = service(BUS_INIT)
    assert init["command"][:3] == ["python", "-m", "mlcp.runtime.bus_init"]
    assert "bus-credentials:/run/mlcp/bus" in init["volumes"]
    init_env = environment(BUS_INIT)
    assert init_env[f"{ENV_PREFIX}KAFKA_USERNAME"] == "broker"
    assert "User:broker" in env["KAFKA_SUPER_USERS"]
    # The broker's password comes from .env (deploy/.env.example), never a literal in the file.
    raw = (ROOT / "docker-compose.yml").read_text()
    assert "MLCP_KAFKA_PASSWORD: ${MLCP_KAFKA_BROKER_PASSWORD:-" in raw


def setting_variables(name: str) -> set[str]:
    """Every variable the service reads: the shared Settings plus its own settings classes
    (those its composition root uses, such as the registry's ``MLCP_AUDIT_*``)."""
    classes = [Settings] + [
        value
        for value in vars(app_module(name)).values()
        if isinstance(value, type) and issubclass(value, BaseSettings)
    ]
    return {
        f"{cls.model_config.get('env_prefix', '')}{field}".upper()
        for cls in classes
        for field in cls.model_fields
    }


@pytest.mark.parametrize("name", SERVICES)
def test_every_mlcp_variable_is_a_settings_field(name: str) -> None:
    known = setting_variables(name)
    unknown = [key for key in environment(name) if key.startswith(ENV_PREFIX) and key not in known]
    assert not unknown, f"{name} sets {unknown}, which Settings does not read"


@pytest.mark.parametrize("name", SERVICES)
def test_service_environment_is_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key, value in environment(name).items():
        if value is not None:
            monkeypatch.setenv(key, value)
    settings = Settings()  # raises on a value the service would refuse at start
    assert settings.http_port == app_module(name).DEFAULT_PORT


def test_kafka_bootstrap_is_the_internal_advertised_listener() -> None:
    kafka = service("kafka")
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = {key: value or "" for key, value in environment("kafka").items()}
    assert env.get("KAFKA_PROCESS_ROLES") == "broker,controller", "KRaft, single node"
    assert env.get("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS") == "0"
    # LISTENER://host:port → {"host:port": "LISTENER"}
    advertised = {
        address: listener
        for listener, address in (
            item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        )
    }
    listener_names = {item.split("://", 1)[0] for item in env["KAFKA_LISTENERS"].split(",")}
    protocol_map = {
        listener: protocol
        for listener, protocol in (
            item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
        )
    }
    assert listener_names <= set(protocol_map), "every listener needs a security protocol"
    assert set(advertised.values()) <= listener_names
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listener_names
    for name in SERVICES:
        bootstrap = environment(name)[f"{ENV_PREFIX}KAFKA_BOOTSTRAP"] or ""
        assert bootstrap in advertised, f"{name}: {bootstrap} is not an advertised listener"
        assert bootstrap.split(":")[0] == "kafka", f"{name} must use the broker's internal name"
    # The host listener is the Settings default, so host-side tools need no variable.
    assert DEFAULT_KAFKA_BOOTSTRAP in advertised
    host_port = int(DEFAULT_KAFKA_BOOTSTRAP.rsplit(":", 1)[1])
    assert any(hp == host_port for _ip, hp, _cp in ports("kafka")), "publish the host listener"


def test_database_url_is_the_composed_postgres() -> None:
    postgres = service("postgres")
    assert str(postgres["image"]).startswith("postgres:17")
    assert postgres.get("healthcheck"), "postgres needs a healthcheck for depends_on"
    env = environment("postgres")
    for name in SERVICES:
        url = urlsplit(environment(name)[f"{ENV_PREFIX}DATABASE_URL"] or "")
        assert url.hostname == "postgres", name
        assert (url.port or 5432) == 5432, name
        assert url.username == env["POSTGRES_USER"] == "mlcp", name
        assert url.password == env["POSTGRES_PASSWORD"], name
        assert url.path.lstrip("/") == env["POSTGRES_DB"] == "mlcp", name
    default = urlsplit(DEFAULT_DATABASE_URL)
    assert ("127.0.0.1", default.port, 5432) in ports("postgres"), (
        "publish PostgreSQL where the Settings default URL points"
    )


def test_registry_url_points_at_the_registry_service() -> None:
    for name in SERVICES:
        url = environment(name).get(f"{ENV_PREFIX}REGISTRY_URL")
        if url is None:
            continue
        parsed = urlsplit(url)
        assert parsed.hostname == "registry", name
        assert parsed.port == app_module("registry").DEFAULT_PORT, name


def test_config_file_is_mounted_and_names_real_webhook_settings() -> None:
    fields = set(Settings.model_fields)
    example: dict[str, Any] | None = None
    for name in SERVICES:
        path = environment(name).get(f"{ENV_PREFIX}CONFIG")
        assert path, f"{name} has no {ENV_PREFIX}CONFIG"
        source = container_path_to_host(name, path)
        assert source is not None, f"{name}: nothing mounted at {path}"
        assert source.is_file(), f"{name}: {source} is not a file"
        example = yaml.safe_load(source.read_text())
    assert isinstance(example, dict)
    assert example.get("models"), "the example config declares no model"
    channels = example["notifications"]["channels"]
    notifier_env = environment("notifier")
    for channel, spec in channels.items():
        variable = spec["url_env"]
        assert variable.startswith(ENV_PREFIX), channel
        assert variable[len(ENV_PREFIX) :].lower() in fields, f"{channel}: {variable} is no setting"
        assert variable in notifier_env, f"{variable} does not reach the notifier"
        assert notifier_env[variable] is None or notifier_env[variable] != "", (
            f"{variable}: pass it through (no value), an empty string reads as a configured URL"
        )
    routed = {c for route in example["notifications"]["routes"] for c in route["channels"]}
    assert routed <= set(channels), "a route names an undeclared channel"


def test_artifact_root_is_one_shared_named_volume() -> None:
    declared = set(compose().get("volumes") or {})
    sources = set()
    for name in SERVICES:
        root = environment(name)[f"{ENV_PREFIX}ARTIFACT_ROOT"]
        mounted = [source for source, target in volumes(name) if target == root]
        assert mounted, f"{name}: no volume at {root}"
        assert mounted[0] in declared, f"{name}: {mounted[0]} is not a declared named volume"
        sources.add(mounted[0])
    assert len(sources) == 1, f"the services must share one artifact volume, not {sources}"


# -- topology ---------------------------------------------------------------------------------


def test_every_published_port_is_on_loopback() -> None:
    for name in compose_services():
        for host_ip, host_port, _target in ports(name):
            assert host_ip == "127.0.0.1", f"{name} publishes {host_port} beyond localhost"


def test_only_what_a_user_needs_is_published() -> None:
    published = {
        name: {host_port for _ip, host_port, _target in ports(name)}
        for name in compose_services()
        if ports(name)
    }
    assert published == PUBLISHED


def test_depends_on_targets_exist_and_can_become_healthy() -> None:
    services = compose_services()
    dockerfile_has_healthcheck = any(kw == "HEALTHCHECK" for kw, _ in dockerfile_instructions())
    for name in services:
        for target, condition in depends_on(name).items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            if condition == "service_healthy":
                healthy = bool(services[target].get("healthcheck")) or (
                    built_from_dockerfile(target) and dockerfile_has_healthcheck
                )
                assert healthy, f"{name} waits for {target} to be healthy; it has no healthcheck"
    for name in SERVICES:
        assert depends_on(name).get("kafka") == "service_healthy", name
        assert depends_on(name).get("postgres") == "service_healthy", name


def test_bind_mount_sources_exist() -> None:
    for name in compose_services():
        for source, target in volumes(name):
            if is_bind(source):
                assert host_path(source).exists(), f"{name}: {source} (for {target}) is missing"


def test_prometheus_scrapes_the_five_services() -> None:
    targets = scrape_targets()
    for name in SERVICES:
        port = app_module(name).DEFAULT_PORT
        assert f"{name}:{port}" in targets, f"no scrape of {name}"
    mounted = container_path_to_host("prometheus", "/etc/prometheus/prometheus.yml")
    assert mounted == PROMETHEUS_CONFIG.resolve(), (
        "compose must mount deploy/prometheus/prometheus.yml"
    )
    # The rule files the config loads (relative to it) are mounted beside it.
    for pattern in prometheus().get("rule_files") or []:
        inside = f"/etc/prometheus/{pattern}"
        folder = container_path_to_host("prometheus", inside.rsplit("/", 1)[0])
        assert folder is not None, f"{inside}: not mounted"
        assert list(folder.glob(pattern.rsplit("/", 1)[1])), f"{inside}: no rule file there"


def test_the_registry_gets_a_valid_bootstrap_token_from_dot_env() -> None:
    from mlcp.registry.auth import RegistrySettings

    raw = str(service("registry")["environment"]["MLCP_REGISTRY_BOOTSTRAP_TOKEN"])
    assert raw.startswith("${MLCP_REGISTRY_BOOTSTRAP_TOKEN:?"), "required, from .env"
    token = environment("registry")["MLCP_REGISTRY_BOOTSTRAP_TOKEN"]
    assert token == dot_env()["MLCP_REGISTRY_BOOTSTRAP_TOKEN"]
    field = RegistrySettings.model_fields["bootstrap_token"]
    assert field.alias is None
    assert RegistrySettings.model_config["env_prefix"] == "MLCP_REGISTRY_"
    settings = RegistrySettings.model_validate({"bootstrap_token": token})
    assert settings.bootstrap_token is not None


def test_the_trainer_sees_host_data_where_a_relative_batch_uri_points() -> None:
    workdir = [arg for kw, arg in dockerfile_instructions() if kw == "WORKDIR"][-1]
    data = container_path_to_host("trainer", f"{workdir}/data/batch-7.csv")
    assert data == (ROOT / "data" / "batch-7.csv").resolve(), "./data at <workdir>/data"
    assert ("./data", f"{workdir}/data") in [(s, t) for s, t in volumes("trainer")]
    assert any(
        str(entry).endswith(":ro") for entry in service("trainer")["volumes"] if "data" in entry
    ), "read-only: the trainer never writes the pipelines' data"


@pytest.mark.skipif(
    DOCKER_COMPOSE is None and not os.environ.get("CI"),  # CI installs it: there it must run
    reason="docker-compose is not installed (Debian package `docker-compose`: make system-deps)",
)
def test_docker_compose_config_accepts_the_file_and_resolves_what_the_code_expects(
    tmp_path: Path,
) -> None:
    """Compose's own parser (no engine needed): the file is valid, and what it resolves with
    .env from deploy/.env.example agrees with this file's reading of it."""
    assert DOCKER_COMPOSE is not None, "CI: `make system-deps` installs docker-compose"
    (tmp_path / ".env").write_text(ENV_EXAMPLE.read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCP_", "COMPOSE_"))}
    done = subprocess.run(
        [DOCKER_COMPOSE, "--project-directory", str(ROOT), "--env-file", str(tmp_path / ".env"),
         "-f", str(COMPOSE_FILE), "config"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) == set(compose_services())
    for name in SERVICES:
        theirs = resolved["services"][name].get("environment") or {}
        ours = {k: v for k, v in environment(name).items() if v is not None}
        # A pass-through variable the host does not set stays unset (null), never "".
        assert {k: str(v) for k, v in theirs.items() if v is not None} == ours, name
        mounts = {  # v1 prints the short syntax, the compose plugin the long one
            v["target"] if isinstance(v, dict) else str(v).split(":")[1]
            for v in resolved["services"][name].get("volumes") or []
        }
        assert mounts == {target for _source, target in volumes(name)}, name
    assert set(resolved["volumes"]) == set(compose()["volumes"])
    # Without .env compose refuses to start: the registry's bootstrap token is required.
    empty = tmp_path / "no-dot-env"
    empty.mkdir()
    bare = subprocess.run(
        [DOCKER_COMPOSE, "--project-directory", str(empty), "-f", str(COMPOSE_FILE), "config"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert bare.returncode != 0
    assert "MLCP_REGISTRY_BOOTSTRAP_TOKEN" in bare.stderr


# -- Grafana ----------------------------------------------------------------------------------


def test_grafana_provisioning_is_mounted_and_points_at_prometheus() -> None:
    grafana = "grafana"
    assert (
        container_path_to_host(grafana, "/etc/grafana/provisioning")
        == (GRAFANA_DIR / "provisioning").resolve()
    )
    (datasource,) = [d for d in grafana_datasources() if d["type"] == "prometheus"]
    url = urlsplit(datasource["url"])
    assert url.hostname in compose_services(), f"datasource host {url.hostname} is no service"
    assert url.port in exposed(url.hostname), url.port
    providers: list[dict[str, Any]] = []
    for path in sorted((GRAFANA_DIR / "provisioning" / "dashboards").glob("*.y*ml")):
        providers += yaml.safe_load(path.read_text()).get("providers") or []
    assert providers, "no dashboard provider"
    for provider in providers:
        folder = container_path_to_host(grafana, provider["options"]["path"])
        assert folder == (GRAFANA_DIR / "dashboards").resolve(), provider["name"]
    home = environment(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        home_file = container_path_to_host(grafana, home)
        assert home_file is not None, f"{home} is not under a mounted folder"
        assert home_file.is_file(), home


def expand_variables(expr: str, variables: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name.startswith("__"):
            return "1m"  # $__rate_interval, $__range, $__interval: durations
        assert name in variables, f"undefined dashboard variable ${name} in {expr}"
        return variables[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", replace, expr)


def dashboard_variables(board: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """name → (series, label) of each ``label_values(series, label)`` variable."""
    found = {}
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("definition") or variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        values = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
        assert values is not None, f"{board['uid']}: ${variable['name']} is not label_values"
        found[variable["name"]] = (re.sub(r"\{.*\}", "", values.group(1)).strip(), values.group(2))
    return found


def test_every_series_a_dashboard_queries_is_served_by_the_service_it_names(
    exported: dict[str, dict[str, frozenset[str]]],
) -> None:
    """Each panel's ``mlcp_<service>_…`` series is exported by that service's code, with the
    labels the panel matches on; a ``$service`` panel holds for every service the variable can
    take; ``__name__`` patterns match a series some service serves."""
    every = {series for served in exported.values() for series in served}
    provisioned_uids = {d.get("uid") for d in grafana_datasources()}
    prometheus_jobs = {job["job_name"] for job in prometheus()["scrape_configs"]}
    for path in dashboards():
        board = json.loads(path.read_text())
        variables = dashboard_variables(board)
        # $service takes every scraped service; other variables take a label's values.
        values = {name: "x" for name in variables}
        services = SERVICES if "service" in variables else ("",)
        exprs = []
        for panel in panels(board.get("panels") or []):
            for source in (
                panel.get("datasource"),
                *[t.get("datasource") for t in panel.get("targets") or []],
            ):
                if isinstance(source, dict) and "uid" in source:
                    assert source["uid"] in provisioned_uids, f"{path.name}: datasource {source}"
            exprs += [t["expr"] for t in panel.get("targets") or [] if t.get("expr")]
        assert exprs, f"{path.name} has no query"
        shown: dict[str, set[str]] = {name: set() for name in SERVICES}
        for expr in exprs:
            for job in re.findall(r'\bjob\s*=\s*"([^"]*)"', expr):
                assert job in prometheus_jobs, f"{path.name}: job {job!r} is not scraped"
            for name in services:
                expanded = expand_variables(expr, {**values, "service": name})
                literal, patterns, _recorded = names_in(expanded)
                for series in literal - PROMETHEUS_OWN:
                    owner = service_of(series)
                    assert series in exported[owner], (
                        f"{path.name}: {series} is not served by the {owner}'s code ({expr})"
                    )
                    shown[owner].add(series)
                for series, labels in selector_labels(expanded):
                    known = exported[service_of(series)].get(series, frozenset())
                    assert all(label in known | SCRAPE_LABELS for label in labels), (
                        f"{path.name}: {series} has no label {labels - known - SCRAPE_LABELS}"
                    )
                in_scope = exported[name] if name else every
                for pattern in patterns:
                    hits = {s for s in in_scope if re.fullmatch(pattern, s)}
                    assert hits, f"{path.name}: {pattern!r} matches no series of {name or 'any'}"
                    for series in hits:
                        shown[service_of(series)].add(series)
        for variable, (series, label) in variables.items():
            if series in PROMETHEUS_OWN:
                assert label in SCRAPE_LABELS, f"{path.name}: ${variable} reads {label} of {series}"
                continue
            labels = exported[service_of(series)].get(series)
            assert labels is not None, f"{path.name}: ${variable} reads {series}, served by none"
            assert label in labels, f"{path.name}: ${variable}: {series} has no label {label}"
        if "service" in variables:  # a per-service board: every service's plumbing on it
            for name in SERVICES:
                for what in REQUIRED_DASHBOARD_METRICS:
                    assert f"mlcp_{name}_{what}" in shown[name], (
                        f"{path.name} never shows {name}'s {what}"
                    )
    overview = json.loads((GRAFANA_DIR / "dashboards" / "mlcp-overview.json").read_text())
    assert "service" in dashboard_variables(overview), "the overview has no $service variable"


def test_dashboard_service_variable_lists_scraped_services() -> None:
    boards = [json.loads(path.read_text()) for path in dashboards()]
    per_service = [board for board in boards if "service" in dashboard_variables(board)]
    assert per_service, "no dashboard can be narrowed to one service"
    for board in per_service:
        series, label = dashboard_variables(board)["service"]
        assert (series, label) == ("up", "service"), board["uid"]
    for name in SERVICES:  # the scrape config gives every target that label
        labels = scrape_targets()[f"{name}:{app_module(name).DEFAULT_PORT}"][2]
        assert labels.get("service") == name


# -- Dockerfile -------------------------------------------------------------------------------


@functools.cache
def dockerfile_instructions() -> tuple[tuple[str, str], ...]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return tuple(instructions)


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def test_dockerfile_takes_the_service_as_a_build_argument() -> None:
    stages = dockerfile_stages()
    assert stages, "the Dockerfile has no FROM"
    assert any(kw == "ARG" and rest.split("=")[0] == "SERVICE" for s in stages for kw, rest in s)
    for stage in stages:
        # An ARG is scoped to its stage: a stage that uses SERVICE must declare it again.
        uses = any(re.search(r"\$\{?SERVICE\b", rest) for kw, rest in stage[1:] if kw != "ARG")
        declares = any(kw == "ARG" and rest.split("=")[0] == "SERVICE" for kw, rest in stage)
        assert declares or not uses, f"stage {stage[0][1]!r} uses SERVICE without ARG SERVICE"


def test_dockerfile_runs_unprivileged_with_a_healthcheck_and_a_default_command() -> None:
    final = dockerfile_stages()[-1]
    keywords = [kw for kw, _ in final]
    users = [rest for kw, rest in final if kw == "USER"]
    assert users, "the final stage must set USER"
    assert users[-1].split(":")[0] not in ("root", "0"), "run as a non-root user"
    assert "HEALTHCHECK" in keywords
    assert "CMD" in keywords or "ENTRYPOINT" in keywords
    (healthcheck,) = [rest for kw, rest in final if kw == "HEALTHCHECK"]
    assert "/healthz" in healthcheck or any(
        kw == "COPY" and "healthcheck" in rest for kw, rest in final
    ), "the healthcheck must probe /healthz"


def test_dockerfile_python_satisfies_requires_python() -> None:
    text = DOCKERFILE.read_text()
    match = re.search(r"python:(\d+)\.(\d+)", text)
    assert match, "the Dockerfile does not name its Python image"
    version = (int(match.group(1)), int(match.group(2)))
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    for clause in requires.split(","):
        operator, bound = re.match(r"\s*([<>=!~]+)\s*([\d.]+)", clause).groups()  # type: ignore[union-attr]
        limit = tuple(int(p) for p in bound.split(".")[:2])
        ok = {
            ">=": version >= limit,
            "<": version < limit,
            ">": version > limit,
            "<=": version <= limit,
        }
        assert ok.get(operator, True), f"python {version} does not satisfy {requires}"


@functools.cache
def dockerignore_rules() -> tuple[tuple[bool, re.Pattern[str]], ...]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        pattern = pattern.removeprefix("./").strip("/")
        rules.append((negated, re.compile(glob_to_regex(pattern))))
    return tuple(rules)


def glob_to_regex(pattern: str) -> str:
    """Docker's .dockerignore glob (Go filepath.Match plus ``**``) as a regex."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out, i = (
                out + "[" + ("^" + body[1:] if body[:1] in "!^" and body else body) + "]",
                end + 1,
            )
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def ignored(relative: str) -> bool:
    """Whether the build context leaves ``relative`` out (a rule on a parent dir counts too)."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, rule in dockerignore_rules():
        if any(rule.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_glob_to_regex_follows_dockerignore_rules() -> None:
    assert re.fullmatch(glob_to_regex("*"), "libs")
    assert not re.fullmatch(glob_to_regex("*"), "libs/x.py")
    assert re.fullmatch(glob_to_regex("**/__pycache__"), "__pycache__")
    assert re.fullmatch(glob_to_regex("**/__pycache__"), "a/b/__pycache__")
    assert re.fullmatch(glob_to_regex("**/*.py[cod]"), "a/b.pyc")


def workspace_members() -> list[Path]:
    workspace = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    return sorted(p for glob in workspace["members"] for p in ROOT.glob(glob) if p.is_dir())


def test_build_context_holds_what_the_image_needs() -> None:
    needed = ["pyproject.toml", "uv.lock"]
    for member in workspace_members():
        relative = member.relative_to(ROOT).as_posix()
        needed.append(f"{relative}/pyproject.toml")
        needed += [p.relative_to(ROOT).as_posix() for p in (member / "src").rglob("*.py")]
        needed += [p.relative_to(ROOT).as_posix() for p in (member / "src").rglob("*.sql")]
    left_out = [path for path in needed if ignored(path)]
    assert not left_out, f".dockerignore leaves out {left_out[:5]}"
    for path in (".venv/bin/python", ".git/HEAD", "libs/runtime/src/mlcp/__pycache__/x.pyc"):
        assert ignored(path), f"{path} must stay out of the build context"


def test_dockerfile_copies_only_what_exists_in_the_build_context() -> None:
    for keyword, rest in dockerfile_instructions():
        if keyword not in ("COPY", "ADD"):
            continue
        args = [a for a in rest.split() if not a.startswith("--")]
        if any(a.startswith("--from") for a in rest.split()):
            continue
        for source in args[:-1]:
            if source in (".", "./"):
                continue
            path = ROOT / source
            assert path.exists(), f"COPY {source}: not in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            kept = [f for f in files if not ignored(f.relative_to(ROOT).as_posix())]
            assert kept, f"COPY {source}: .dockerignore leaves it out of the build context"


# -- the image's healthcheck script -----------------------------------------------------------


def load_healthcheck() -> ModuleType:
    path = ROOT / "deploy" / "docker" / "healthcheck.py"
    spec = importlib.util.spec_from_file_location("mlcp_image_healthcheck", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_probes_healthz_on_the_configured_or_default_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    healthcheck = load_healthcheck()
    monkeypatch.setenv("MLCP_HTTP_HOST", "0.0.0.0")
    monkeypatch.setenv("MLCP_HTTP_PORT", "8083")
    assert healthcheck.probe_url() == "http://127.0.0.1:8083/healthz"
    default_port = tmp_path / "default-port"
    default_port.write_text("8084\n")
    monkeypatch.setattr(healthcheck, "DEFAULT_PORT_FILE", default_port)
    monkeypatch.delenv("MLCP_HTTP_PORT")
    monkeypatch.setenv("MLCP_HTTP_HOST", "10.0.0.7")
    assert healthcheck.probe_url() == "http://10.0.0.7:8084/healthz"


def test_healthcheck_exit_status_follows_healthz(monkeypatch: pytest.MonkeyPatch) -> None:
    healthcheck = load_healthcheck()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("MLCP_HTTP_HOST", "127.0.0.1")
        monkeypatch.setenv("MLCP_HTTP_PORT", str(server.server_address[1]))
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # must be ignored for loopback
        assert healthcheck.main() == 0
    finally:
        server.shutdown()
        server.server_close()
    # Nothing listens there any more: unhealthy, not a traceback.
    assert healthcheck.main() == 1
