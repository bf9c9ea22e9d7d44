"""`mlcp demo`'s pure parts: the packaged configuration, the timeline lines, traffic routing."""

from __future__ import annotations

from typing import Any

import pytest

from mlcp.cli.demo import config
from mlcp.cli.demo.inference import Inference, Served
from mlcp.cli.demo.timeline import Seen, describe
from mlcp.contracts import ModelRolledBack, TrainingRequested
from mlcp.policy.platform import parse_platform_config

pytestmark = pytest.mark.unit


def test_the_packaged_config_is_valid_and_renamed_per_run() -> None:
    parsed = parse_platform_config(config.render("demo-123"))
    assert list(parsed.models) == ["demo-123"]
    model = parsed.model("demo-123")
    assert model.dataset == "demo-123-events"
    assert model.train == "mlcp.examples.sklearn:train_logistic"
    # No stage waits for a person or a CI system: the demo runs unattended.
    assert {g.kind for g in model.gates} <= {"metrics", "data_quality", "baseline", "security_scan"}
    # The bake fits in one drift window: the canary's traffic alone never closes one.
    assert model.rollout.bake.min_predictions < model.drift.window_size
    channels = {c.kind for c in parsed.notifications.channels.values()}
    assert channels == {"slack", "wecom"}


def test_timeline_lines_name_the_version_and_the_evidence() -> None:
    back = Seen(
        12.5,
        ModelRolledBack.TYPE,
        ModelRolledBack(
            model="m", alias="canary", from_version="1.0.1", to_version=None, cause="degraded"
        ),
    )
    assert describe(back) == ("m@1.0.1", "canary → (removed) cause=degraded")
    request = Seen(
        1.0,
        TrainingRequested.TYPE,
        TrainingRequested(
            model="m", reason="data_threshold", rows_since_last_run=1200, threshold=1000
        ),
    )
    assert request.short == "training.requested"
    assert describe(request) == ("m", "reason=data_threshold rows=1200")


def served(alias: str, version: str, percent: int) -> Served:
    return Served(alias, version, percent, estimator=None)


def test_requests_are_split_by_the_canary_traffic_percent() -> None:
    inference: Any = Inference.__new__(Inference)
    inference._routed = 0
    canary, production = served("canary", "2.0.0", 10), served("production", "1.0.0", 100)
    picks = [inference._route(canary, production).alias for _ in range(100)]
    assert picks.count("canary") == 10
    # Only a canary serving (the first version): it answers everything.
    assert {inference._route(canary, None).alias for _ in range(5)} == {"canary"}
    assert {inference._route(None, production).alias for _ in range(5)} == {"production"}
