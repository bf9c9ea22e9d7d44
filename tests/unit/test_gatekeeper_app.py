"""The gatekeeper's composition root: a bad DAG or setting stops the start with the field named;
a good config wires the handlers and the read-only HTTP API."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlcp.contracts import (
    ApprovalGranted,
    ApprovalRejected,
    ExternalCheckReported,
    ModelVersionRegistered,
)
from mlcp.gatekeeper.app import GatekeeperSettings, build
from mlcp.runtime import Settings
from mlcp.runtime.settings import ConfigurationError
from tests.builders import model_entry, platform_yaml

pytestmark = pytest.mark.unit


def settings_with(tmp_path: Path, gates: str) -> Settings:
    config = tmp_path / "mlcp.yaml"
    # ``gates`` is YAML (often invalid on purpose): parsed, never validated, before writing.
    config.write_text(platform_yaml({"churn": model_entry(gates=yaml.safe_load(f"[{gates}]"))}))
    return Settings(config=config, topic_prefix="unit.")


@pytest.mark.parametrize(
    ("gates", "expected"),
    [
        ("{name: a, kind: vote}", "models.churn.gates[0].kind"),
        (
            "{name: a, kind: manual, depends_on: [b]}, {name: b, kind: manual, depends_on: [a]}",
            "cycle a -> b -> a",
        ),
        ("{name: a, kind: manual, depends_on: [ghost]}", "stage 'a' depends_on unknown stage"),
        (
            '{name: q, kind: metrics, require: {accuracy: ">= high"}}',
            "models.churn.gates[0].require.accuracy",
        ),
        (
            "{name: b, kind: baseline, metric: accuracy, min_relative_change: 2}",
            "stage 'b': min_relative_change must be between 0 and 1",
        ),
    ],
)
def test_an_invalid_dag_stops_the_start_naming_stage_and_field(
    tmp_path: Path, gates: str, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        build(settings_with(tmp_path, gates))
    assert expected in str(info.value)


def test_a_bad_sweep_interval_names_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLCP_GATEKEEPER_SWEEP_INTERVAL_S", "-1")
    with pytest.raises(ConfigurationError, match="MLCP_GATEKEEPER_SWEEP_INTERVAL_S"):
        build(settings_with(tmp_path, "{name: a, kind: manual}"))


def test_a_bad_artifact_limit_names_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLCP_ARTIFACT_MAX_DECOMPRESSED_BYTES", "a lot")
    with pytest.raises(
        ConfigurationError, match="MLCP_ARTIFACT_MAX_DECOMPRESSED_BYTES: not a size"
    ):
        build(settings_with(tmp_path, "{name: a, kind: security_scan}"))


def test_a_valid_config_subscribes_to_the_gate_inputs(tmp_path: Path) -> None:
    runtime = build(
        settings_with(tmp_path, "{name: a, kind: manual, expires: 1h}"),
        gatekeeper=GatekeeperSettings(sweep_interval_s=1),
    )
    assert sorted(runtime.consumer.topics) == sorted(
        f"unit.{t.TYPE}"
        for t in (ModelVersionRegistered, ApprovalGranted, ApprovalRejected, ExternalCheckReported)
    )


def test_the_example_config_builds() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "mlcp.example.yaml"
    runtime = build(Settings(config=example), gatekeeper=GatekeeperSettings())
    assert len(runtime.consumer.topics) == 4
