"""One correlation id and one linked OpenTelemetry trace follow a lifecycle across services.

The trainer, the registry and the gatekeeper run as separate processes on real Kafka and
PostgreSQL, each writing its finished spans to a JSON-lines file (``MLCP_TRACES_FILE``). A data
pipeline announces two batches inside its own trace; the second crosses the retrain threshold.
Then, from the bus and from the spans:

* TrainingRequested, RunStarted, RunFinished, ModelVersionRegistered, GatePassed and
  ModelPromoted all carry the pipeline's correlation id and ``traceparent`` headers of the
  pipeline's trace;
* every span of that trace descends from the pipeline's span, through all three services —
  including the worker's training span, which runs long after the request was consumed;
* where the lifecycle resumes under another trigger (a Kafka batch whose span continues its first
  record's trace), the resumed span links to that trigger.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlcp.contracts import (
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
from tests.conftest import Infra, free_port, wait_for
from tests.integration.kafka_tools import create_topics, produce, read_all
from tests.integration.test_runtime_crash import wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

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
    rollout: {{canary_percent: 10, rollback_window: 1h}}
"""
LIFECYCLE = (
    TrainingRequested,
    RunStarted,
    RunFinished,
    ModelVersionRegistered,
    GatePassed,
    ModelPromoted,
)


def _spans(folder: Path) -> list[dict[str, Any]]:
    spans = []
    for path in folder.glob("*.jsonl"):
        spans += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return spans


async def test_one_correlation_and_one_linked_trace_from_data_to_canary(
    infra: Infra, unique: str, tmp_path: Path, spawn: Any
) -> None:
    prefix, correlation = f"t{unique}.", f"lifecycle-{unique}"
    config = tmp_path / "mlcp.yaml"
    config.write_text(CONFIG.format(threshold=600))
    traces = tmp_path / "traces"
    traces.mkdir()
    await create_topics(infra.admin, [f"{prefix}{t.TYPE}" for t in (DataArrived, *LIFECYCLE)], 3)
    started = []
    for service in ("registry", "gatekeeper", "trainer"):
        port = free_port()
        env = {
            **infra.env(f"svc-{service}", prefix=prefix),
            "MLCP_DB_SCHEMA": f"{service}_{unique}",
            "MLCP_CONFIG": str(config),
            "MLCP_HTTP_PORT": str(port),
            "MLCP_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
            "MLCP_LOG_FORMAT": "text",
            "MLCP_TRACES_FILE": str(traces / f"{service}.jsonl"),
            "MLCP_REGISTRY_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN,
        }
        started.append((port, spawn(["-m", f"mlcp.{service}"], env, service)))
    for port, proc in started:
        await wait_ready(port, proc, timeout=300)

    files = write_batches(tmp_path / "data", batches=2, rows_per_batch=300, seed=11)
    # Each batch is announced in a trace of its own; the second crosses the threshold, so the
    # lifecycle is the second one's, even when both arrive in one Kafka batch (whose span
    # continues the first record's trace).
    traces_of = [EARLIER_TRACE_ID, TRACE_ID]
    await produce(
        infra.admin,
        f"{prefix}{DataArrived.TYPE}",
        [
            (
                b"churn-events",
                encode_event(
                    new_event(f.event("churn-events"), source="pipeline", correlationid=correlation)
                ),
                [("traceparent", f"00-{trace_id}-{PIPELINE_SPAN}-01".encode())],
            )
            for f, trace_id in zip(files, traces_of, strict=True)
        ],
    )

    async def promoted() -> list[Any]:
        return await read_all(infra.admin, f"{prefix}{ModelPromoted.TYPE}")

    [canary] = await wait_for(promoted, timeout=600, what="ModelPromoted(canary)")
    assert decode_event(canary.value).data.alias == "canary"

    # The bus: one correlation id and one trace id on every event of the lifecycle.
    for kind in LIFECYCLE:
        records = await read_all(infra.admin, f"{prefix}{kind.TYPE}")
        assert len(records) == 1, f"{kind.TYPE}: {len(records)} records"
        event = decode_event(records[0].value, expected_type=kind.TYPE)
        assert event.correlationid == correlation, kind.TYPE
        traceparent = dict(records[0].headers)["traceparent"].decode()
        assert traceparent.split("-")[1] == TRACE_ID, f"{kind.TYPE} left the pipeline's trace"

    # The spans: the lifecycle's trace is one tree rooted at the pipeline's span.
    async def lifecycle_spans() -> list[dict[str, Any]] | None:
        spans = [s for s in _spans(traces) if s["trace_id"] == TRACE_ID]
        services = {s["service"] for s in spans}
        return spans if {"mlcp-trainer", "mlcp-registry", "mlcp-gatekeeper"} <= services else None

    spans = await wait_for(lifecycle_spans, timeout=30, what="spans of all three services")
    ids = {s["span_id"] for s in spans} | {PIPELINE_SPAN}
    orphans = [s for s in spans if s["parent_span_id"] not in ids]
    assert not orphans, f"spans whose parent is not in the lifecycle's trace: {orphans}"
    names = {s["name"] for s in spans}
    assert "mlcp.trainer.run" in names, "the worker's training continues the request's trace"
    run_span = next(s for s in spans if s["name"] == "mlcp.trainer.run")
    assert run_span["end"] - run_span["start"] > 0

    # Where a step resumed the lifecycle under another trigger's span (the trainer's Kafka batch,
    # the worker), the resumed span links to that trigger's span, which exists.
    every = _spans(traces)
    by_id = {s["span_id"]: s for s in every}
    linked = [s for s in spans if s["links"]]
    assert linked, "no resumed span links to the trigger it ran under"
    for span in linked:
        for link in span["links"]:
            assert link["span_id"] in by_id, f"link to an unknown span: {link}"
