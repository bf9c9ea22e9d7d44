"""The five services as an operations team meets them: one lifecycle, one trace, out over OTLP.

The registry, trainer, gatekeeper, monitor and notifier run as separate processes on real Kafka
and PostgreSQL, configured only with the standard ``OTEL_*`` variables: ``OTEL_TRACES_EXPORTER=
otlp`` to a test receiver that speaks OTLP/HTTP (``otlp_receiver.py``), JSON logs. A data
pipeline announces two batches inside its own trace; the second crosses the retrain threshold;
the candidate's manual stage is approved through the registry's HTTP API; the notifier delivers
the approval request and the promotion to a webhook. One lifecycle is started once for the
module, then each test checks one promise:

* the bus — every event of the lifecycle carries the pipeline's correlation id and trace;
* the trace — the spans that arrive over OTLP from all five services form one tree rooted at the
  pipeline's span: PRODUCER spans for the relay's sends (with where each record landed), the
  consumers' spans under them, the registry's SERVER span for the approval, linked spans where
  the lifecycle resumed under another trigger;
* the logs — no ERROR line anywhere (a quiet start and run), and JSON lines written while the
  lifecycle was handled carry its trace id;
* the metrics — every metric a Grafana panel or a Prometheus rule in deploy/ names is served on
  the ``/metrics`` of these processes (``test_deploy_metrics.py`` holds the names).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlcp.contracts import (
    ApprovalGranted,
    ApprovalRequested,
    DataArrived,
    GatePassed,
    ModelPromoted,
    ModelVersionRegistered,
    RunFinished,
    RunStarted,
    TrainingRequested,
    decode_event,
    encode_event,
    new_event,
)
from mlcp.examples.sklearn import write_batches
from tests import conftest
from tests.conftest import Infra, Proc, free_port, wait_for
from tests.deploy_queries import (
    PROMETHEUS_OWN,
    dashboard_queries,
    names_in,
    rule_queries,
    served_series,
)
from tests.e2e.otlp_receiver import Receiver
from tests.integration.kafka_tools import produce, read_all
from tests.integration.test_runtime_crash import wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SERVICES = ("registry", "gatekeeper", "trainer", "monitor", "notifier")
TRACE_ID = "5a1e7f3c9b2d4e6f8a0b1c2d3e4f5a6b"
EARLIER_TRACE_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
PIPELINE_SPAN = "1a2b3c4d5e6f7a8b"
BOOTSTRAP_TOKEN = "tracing-test-bootstrap-token-0123456789abcdef"
CONFIG = """
models:
  churn:
    dataset: churn-events
    label: churned
    train: mlcp.examples.sklearn:train_logistic
    retrain: {{min_new_rows: {threshold}}}
    gates:
      - {{name: quality, kind: metrics, require: {{accuracy: ">= 0.8"}}}}
      - {{name: data, kind: data_quality, require: {{rows: ">= 100"}}}}
      - {{name: scan, kind: security_scan, depends_on: [quality]}}
      - {{name: approve, kind: manual, depends_on: [scan, data]}}
    rollout: {{canary_percent: 10, rollback_window: 1h}}
notifications:
  channels:
    hook: {{kind: webhook, url_env: MLCP_TEST_HOOK_URL, secret_env: MLCP_TEST_HOOK_KEY}}
  routes:
    - {{events: [approval.requested, model.promoted], channels: [hook]}}
"""
LIFECYCLE = (
    TrainingRequested,
    RunStarted,
    RunFinished,
    ModelVersionRegistered,
    ApprovalRequested,
    ApprovalGranted,
    GatePassed,
    ModelPromoted,
)


@dataclass
class Lifecycle:
    """What the module's one lifecycle left behind, for the tests to read."""

    prefix: str
    correlation: str
    receiver: Receiver
    procs: dict[str, Proc]
    ports: dict[str, int]
    records: dict[str, Any] = field(default_factory=dict)  # event type → its one record

    def log_lines(self) -> dict[str, list[dict[str, Any]]]:
        """Each service's JSON log lines so far."""
        lines: dict[str, list[dict[str, Any]]] = {}
        for name, proc in self.procs.items():
            text = proc.log_path.read_text(errors="replace")
            lines[name] = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        return lines

    def raw_logs(self) -> dict[str, str]:
        return {n: p.log_path.read_text(errors="replace") for n, p in self.procs.items()}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
async def lifecycle(
    infra: Infra, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Lifecycle]:
    token = uuid.uuid4().hex[:10]
    conftest._TOKENS.append(token)  # its topics and schemas go when the session ends
    prefix, correlation = f"t{token}.", f"lifecycle-{token}"
    folder = tmp_path_factory.mktemp("lifecycle")
    config = folder / "mlcp.yaml"
    config.write_text(CONFIG.format(threshold=600))
    infra.prepare_bus(prefix)
    procs: dict[str, Proc] = {}
    ports: dict[str, int] = {}
    try:
        for service in SERVICES:
            ports[service] = free_port()
            env = {
                **os.environ,
                **infra.env(f"svc-{service}", prefix=prefix),
                "MLCP_DB_SCHEMA": f"{service}_{token}",
                "MLCP_CONFIG": str(config),
                "MLCP_HTTP_PORT": str(ports[service]),
                "MLCP_ARTIFACT_ROOT": str(folder / "artifacts"),
                "MLCP_LOG_FORMAT": "json",
                "MLCP_REGISTRY_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN,
                "MLCP_TEST_HOOK_URL": f"{receiver.url}/hook",
                "MLCP_TEST_HOOK_KEY": "tracing-test-signing-key",
                # Only the standard OpenTelemetry settings: what an operations team sets.
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
            }
            env.pop("MLCP_TRACES_FILE", None)
            procs[service] = Proc(["-m", f"mlcp.{service}"], env, folder / f"{service}.log")
        for service in SERVICES:
            await wait_ready(ports[service], procs[service], timeout=300)
        run = Lifecycle(prefix, correlation, receiver, procs, ports)
        await _play(infra, run, folder)
        yield run
    finally:
        for proc in procs.values():
            proc.stop()


async def _play(infra: Infra, run: Lifecycle, folder: Path) -> None:
    files = write_batches(folder / "data", batches=2, rows_per_batch=300, seed=11)
    # Each batch is announced in a trace of its own; the second crosses the threshold, so the
    # lifecycle is the second one's, even when both arrive in one Kafka batch (whose span
    # continues the first record's trace).
    await produce(
        infra.settings("pipeline"),
        f"{run.prefix}{DataArrived.TYPE}",
        [
            (
                b"churn-events",
                encode_event(
                    new_event(
                        f.event("churn-events"), source="pipeline", correlationid=run.correlation
                    )
                ),
                [("traceparent", f"00-{trace_id}-{PIPELINE_SPAN}-01".encode())],
            )
            for f, trace_id in zip(files, (EARLIER_TRACE_ID, TRACE_ID), strict=True)
        ],
    )

    async def topic(kind: Any) -> list[Any]:
        return await read_all(infra.admin, f"{run.prefix}{kind.TYPE}")

    [asked] = await wait_for(
        lambda: topic(ApprovalRequested), timeout=600, what="ApprovalRequested"
    )
    requested = decode_event(asked.value, expected_type=ApprovalRequested.TYPE).data
    # A person approves through the registry's API (no traceparent of their own).
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{run.ports['registry']}") as api:
        answer = await api.post(
            f"/models/{requested.model}/versions/{requested.version}/stages/"
            f"{requested.stage}/approve",
            headers={"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"},
            json={"comment": "looks good"},
        )
    assert answer.status_code == 202, answer.text
    [canary] = await wait_for(lambda: topic(ModelPromoted), timeout=120, what="ModelPromoted")
    assert decode_event(canary.value).data.alias == "canary"
    for kind in LIFECYCLE:
        records = await topic(kind)
        assert len(records) == 1, f"{kind.TYPE}: {len(records)} records"
        run.records[kind.TYPE] = records[0]

    async def delivered() -> int:
        return len(run.receiver.deliveries) >= 2

    await wait_for(delivered, timeout=60, what="the notifier's two webhook deliveries")


def _header(record: Any, name: str) -> str:
    return str(dict(record.headers)[name].decode())


async def test_every_event_of_the_lifecycle_carries_its_correlation_and_trace(
    lifecycle: Lifecycle,
) -> None:
    for event_type, record in lifecycle.records.items():
        event = decode_event(record.value, expected_type=event_type)
        assert event.correlationid == lifecycle.correlation, event_type
        trace_id = _header(record, "traceparent").split("-")[1]
        assert trace_id == TRACE_ID, f"{event_type} left the pipeline's trace"


async def test_one_lifecycle_arrives_over_otlp_as_one_trace_from_all_five_services(
    lifecycle: Lifecycle,
) -> None:
    want = {f"mlcp-{s}" for s in SERVICES}
    sends = {f"send {lifecycle.prefix}{t}" for t in lifecycle.records}

    def consumed(spans: list[dict[str, Any]]) -> bool:
        # Every send (but RunStarted's, which nobody consumes) has a consumer's span under it.
        parents = {s["parent_span_id"] for s in spans}
        return all(
            s["span_id"] in parents
            for s in spans
            if s["name"] in sends and not s["name"].endswith(RunStarted.TYPE)
        )

    async def complete() -> list[dict[str, Any]] | None:
        spans = lifecycle.receiver.trace(TRACE_ID)
        names = {s["name"] for s in spans}
        arrived = want <= {s["service"] for s in spans} and sends <= names
        return spans if arrived and consumed(spans) else None

    spans = await wait_for(complete, timeout=60, what="the lifecycle's spans over OTLP")
    by_id = {s["span_id"]: s for s in spans}
    orphans = [s for s in spans if s["parent_span_id"] not in {*by_id, PIPELINE_SPAN}]
    assert not orphans, f"spans whose parent is not in the lifecycle's trace: {orphans}"
    names = {s["name"] for s in spans}
    assert "mlcp.trainer.run" in names, "the worker's training continues the request's trace"

    # The relay's sends: one PRODUCER span per record, messaging conventions, where it landed;
    # the consumer's span of that record is its child.
    for event_type, record in lifecycle.records.items():
        topic = f"{lifecycle.prefix}{event_type}"
        [send] = [s for s in spans if s["name"] == f"send {topic}"]
        assert send["kind"] == "PRODUCER"
        attributes = send["attributes"]
        assert attributes["messaging.system"] == "kafka"
        assert attributes["messaging.operation.type"] == "send"
        assert attributes["messaging.destination.name"] == topic
        assert attributes["messaging.message.id"] == decode_event(record.value).id
        assert attributes["messaging.destination.partition.id"] == str(record.partition)
        assert attributes["messaging.kafka.offset"] == record.offset
        assert _header(record, "traceparent").split("-")[2] == send["span_id"]

    # The approval came over HTTP: the registry's SERVER span, named by route, and the span that
    # resumed the lifecycle for it links to that request.
    every = {s["span_id"]: s for s in lifecycle.receiver.all_spans()}
    requests = [
        s
        for s in every.values()
        if s["kind"] == "SERVER" and s["service"] == "mlcp-registry" and "approve" in s["name"]
    ]
    assert len(requests) == 1, requests
    [request] = requests
    assert request["name"] == "POST /models/{model}/versions/{version}/stages/{stage}/approve"
    assert request["attributes"]["http.route"] == request["name"].split(" ", 1)[1]
    assert request["attributes"]["http.response.status_code"] == 202
    [approval] = [s for s in spans if s["name"] == "mlcp.registry.approval"]
    assert [link["span_id"] for link in approval["links"]] == [request["span_id"]]
    for span in spans:
        for link in span["links"]:
            assert link["span_id"] in every, f"link to a span that never arrived: {link}"


async def test_services_run_the_lifecycle_without_an_error_line_and_log_its_trace(
    lifecycle: Lifecycle,
) -> None:
    logs = lifecycle.log_lines()
    errors = {
        name: [line for line in lines if line["level"] in ("error", "critical")]
        for name, lines in logs.items()
    }
    assert not any(errors.values()), f"ERROR lines: {errors}"
    raw = lifecycle.raw_logs()
    stray = {n: [x for x in t.splitlines() if x and not x.startswith("{")] for n, t in raw.items()}
    assert not any(stray.values()), f"lines outside the JSON log format: {stray}"
    traced = [line for lines in logs.values() for line in lines if line.get("trace_id")]
    assert traced, "no log line carries a trace id"
    assert all(len(line["trace_id"]) == 32 and len(line["span_id"]) == 16 for line in traced)
    assert any(line["trace_id"] == TRACE_ID for line in traced), "no line of the lifecycle"


async def test_every_metric_of_the_dashboards_and_rules_is_served(lifecycle: Lifecycle) -> None:
    served: dict[str, set[str]] = {}
    async with httpx.AsyncClient() as client:
        for service, port in lifecycle.ports.items():
            answer = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
            assert answer.status_code == 200, service
            served[service] = served_series(answer.text)
    every = set().union(*served.values()) | PROMETHEUS_OWN
    queries = {**dashboard_queries(), **rule_queries()}
    assert len(queries) > 40
    for where, expr in queries.items():
        literal, patterns, _ = names_in(expr)
        assert literal <= every, f"{where}: no service serves {sorted(literal - every)}"
        for pattern in patterns:
            # A pattern stands for the same metric of every service (mlcp_<service>_…).
            each = {
                s: {n for n in names if re.fullmatch(pattern, n)} for s, names in served.items()
            }
            missing = sorted(s for s, names in each.items() if not names)
            assert not missing, f"{where}: {pattern!r} matches nothing served by {missing}"
