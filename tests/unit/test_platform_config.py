"""The platform YAML: the documented example loads; every kind of mistake is refused with the
path of the field at fault."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from mlcp.policy.platform import (
    Threshold,
    load_platform_config,
    parse_duration,
    parse_platform_config,
)
from mlcp.runtime.settings import ConfigurationError

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "mlcp.example.yaml"
MODEL = 'models: {churn: {dataset: churn-events, label: churned, train: "pkg.mod:fn"%s}}'


def test_example_config_loads_with_its_dag_and_policies() -> None:
    config = load_platform_config(EXAMPLE)
    churn = config.model("churn")
    assert churn.dataset == "churn-events"
    assert churn.target.key(True) == churn.target.key(1) == "1"
    assert [s.name for s in churn.gates] == [
        "quality",
        "data",
        "baseline",
        "scan",
        "review",
        "approve",
    ]
    assert churn.gates[0].require["accuracy"] == Threshold(operator=">=", value=0.92)
    assert churn.gates[5].expires == timedelta(hours=72)
    assert churn.retrain.min_new_rows == 1000
    assert churn.retrain.drift_cooldown == timedelta(minutes=30)
    assert churn.rollout.canary_percent == 10
    assert churn.rollout.degrade_if["latency_p95_ms"].holds(251)
    assert not churn.rollout.degrade_if["latency_p95_ms"].holds(250)
    assert config.models_fed_by("churn-events") == ["churn"]
    assert set(config.notifications.channels) == {"team-slack", "ops-wecom"}


def test_no_config_file_means_no_models() -> None:
    assert load_platform_config(None).models == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[1, 2]", "top level must be a mapping"),
        ("models: {churn: [", "not valid YAML"),
        (MODEL % ", retrain: {min_new_row: 5}", "models.churn.retrain.min_new_row: Extra inputs"),
        (MODEL % ", retrain: {min_new_rows: 0}", "models.churn.retrain.min_new_rows"),
        (MODEL % ", retrain: {drift_cooldown: soon}", "not a duration"),
        (
            MODEL % ', gates: [{name: q, kind: metrics, require: {accuracy: "=> 0.9"}}]',
            "gates[0].require.accuracy",
        ),
        (MODEL % ", gates: [{name: q, kind: wat}]", "models.churn.gates[0].kind"),
        (
            MODEL % ", gates: [{name: q, kind: metrics}]",
            "stage 'q' of kind metrics needs 'require'",
        ),
        (MODEL % ", gates: [{name: b, kind: baseline}]", "needs 'metric'"),
        (
            MODEL % ", gates: [{name: a, kind: manual, depends_on: [x]}]",
            "depends_on unknown stage 'x'",
        ),
        (
            MODEL
            % (
                ", gates: [{name: a, kind: manual, depends_on: [b]},"
                " {name: b, kind: manual, depends_on: [a]}]"
            ),
            "cycle a -> b -> a",
        ),
        (
            MODEL % ", gates: [{name: a, kind: manual}, {name: a, kind: manual}]",
            "two stages are named 'a'",
        ),
        (MODEL % ", rollout: {canary_percent: 150}", "models.churn.rollout.canary_percent"),
        ('models: {Churn!: {dataset: d, label: l, train: "a:b"}}', "models.Churn!"),
        ('models: {churn: {dataset: d, label: l, train: "not a callable"}}', "models.churn.train"),
        (
            "notifications: {channels: {s: {kind: slack, url_env: SLACK}},"
            " routes: [{events: [gate.failed], channels: [t]}]}",
            "unknown channel 't'",
        ),
        (
            "notifications: {channels: {s: {kind: slack, url: 'https://hooks'}}}",
            "notifications.channels.s",
        ),
    ],
)
def test_invalid_config_names_the_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_platform_config(text)
    assert expected in str(info.value)


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_platform_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("24h", 86400), ("1.5d", 129600), ("500ms", 0.5), (45, 45), ("10 s", 10)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("bad", ["0s", "-5m", "5 minutes", "", "h"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "observed", "holds"),
    [
        (">= 0.92", 0.92, True),
        (">= 0.92", 0.919, False),
        ("< 200", 199.9, True),
        ("<=200", 201, False),
        ("> 0.05", 0.05, False),
        ("== 1", 1.0, True),
        ("!= 1", 1.0, False),
        (">= -1e-3", 0.0, True),
    ],
)
def test_thresholds(text: str, observed: float, holds: bool) -> None:
    threshold = Threshold.model_validate(text)
    assert threshold.holds(observed) is holds


GATE = MODEL % ", gates: [%s]"


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        (
            '{name: d, kind: data_quality, require: {completnes: ">= 0.9"}}',
            "stage 'd' of kind data_quality: unknown measure require.completnes",
        ),
        (
            "{name: b, kind: baseline, metric: accuracy, min_absolute_change: -0.1}",
            "stage 'b': min_absolute_change must be >= 0",
        ),
        (
            "{name: b, kind: baseline, metric: accuracy, min_relative_change: 1.5}",
            "stage 'b': min_relative_change must be between 0 and 1",
        ),
        (
            "{name: m, kind: manual, timeout: 1h}",
            "stage 'm' of kind manual does not take 'timeout'",
        ),
        ("{name: e, kind: external, expires: 1h}", "stage 'e' of kind external does not take"),
        ("{name: s, kind: security_scan, metric: x}", "stage 's' of kind security_scan does not"),
        (
            "{name: s, kind: security_scan, trusted: [sklearn.tree._tree.Tree]}",
            "stage 's': 'trusted' moved to the model's artifact.trusted",
        ),
        ("{name: e, kind: external, timeout: soon}", "gates[0].timeout"),
    ],
)
def test_gate_stage_fields_are_checked_per_kind(stage: str, expected: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_platform_config(GATE % stage)
    assert expected in str(info.value)


def test_gate_stage_kind_specific_fields_load() -> None:
    config = parse_platform_config(
        GATE
        % (
            '{name: d, kind: data_quality, require: {completeness: ">= 0.98", rows: ">= 100"}},'
            " {name: s, kind: security_scan},"
            " {name: b, kind: baseline, metric: loss, higher_is_better: false,"
            " min_relative_change: 0.05}"
        )
    )
    d, s, b = config.model("churn").gates
    assert set(d.require) == {"completeness", "rows"}
    assert s.kind == "security_scan"
    assert (b.higher_is_better, b.min_relative_change) == (False, 0.05)


def test_artifact_rules_default_to_no_pickle_and_take_exact_names() -> None:
    assert parse_platform_config(MODEL % "").model("churn").artifact.policy().allow_pickle is False
    rules = (
        parse_platform_config(
            MODEL % ", artifact: {allow_pickle: true, trusted: [sklearn.tree._tree.Tree]}"
        )
        .model("churn")
        .artifact
    )
    policy = rules.policy()
    assert policy.allow_pickle is True
    assert ("sklearn.tree._tree", "Tree") in policy.pickle_globals()
    assert "sklearn.tree._tree.Tree" in policy.skops_types()


@pytest.mark.parametrize(
    ("artifact", "expected"),
    [
        ("{trusted: [sklearn]}", "models.churn.artifact.trusted: 'sklearn' is not an exact name"),
        ("{allow_pickel: true}", "models.churn.artifact.allow_pickel"),
        ("{allow_pickle: maybe}", "models.churn.artifact.allow_pickle"),
    ],
)
def test_artifact_rules_are_validated_at_start(artifact: str, expected: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_platform_config(MODEL % f", artifact: {artifact}")
    assert expected in str(info.value)


def test_gate_stage_round_trips_through_its_json_dump() -> None:
    """A stored DAG (the gatekeeper keeps it per candidate) loads back as the same stages."""
    from mlcp.policy.platform import GateStage

    stages = (
        parse_platform_config(
            GATE % "{name: r, kind: external, timeout: 2h},"
            " {name: m, kind: metrics, require: {a: '> 1'}}"
        )
        .model("churn")
        .gates
    )
    assert stages, "the example config has gates"
    for stage in stages:
        assert GateStage.model_validate(stage.model_dump(mode="json")) == stage


def test_wecom_channel_message_type() -> None:
    text = "notifications: {channels: {w: {kind: wecom, url_env: W, msgtype: text}}}"
    assert parse_platform_config(text).notifications.channels["w"].msgtype == "text"
    default = "notifications: {channels: {w: {kind: wecom, url_env: W}}}"
    assert parse_platform_config(default).notifications.channels["w"].msgtype is None
    with pytest.raises(ConfigurationError, match="msgtype is for wecom channels, not slack"):
        parse_platform_config(
            "notifications: {channels: {s: {kind: slack, url_env: S, msgtype: text}}}"
        )
