"""The notifier's composition root: it consumes the six alert events, and a bad configuration
(missing channel secret, invalid knob) stops it with the field named, before any connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcp.contracts import (
    ApprovalRequested,
    DriftDetected,
    GateFailed,
    ModelPromoted,
    ModelRolledBack,
    RunFailed,
)
from mlcp.notifier.app import build
from mlcp.runtime import Settings
from mlcp.runtime.settings import ConfigurationError

pytestmark = pytest.mark.unit

CONFIG = """
notifications:
  channels:
    team-slack: {kind: slack, url_env: T_APP_SLACK_URL}
  routes:
    - {events: [gate.failed], channels: [team-slack]}
"""


def settings(tmp_path: Path) -> Settings:
    path = tmp_path / "mlcp.yaml"
    path.write_text(CONFIG)
    return Settings(config=path, topic_prefix="tapp.")


def test_consumes_the_six_alert_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_APP_SLACK_URL", "https://hooks.slack.com/services/A/B/C")
    runtime = build(settings(tmp_path))
    expected = {
        f"tapp.{t.TYPE}"
        for t in (
            GateFailed,
            DriftDetected,
            ModelRolledBack,
            RunFailed,
            ApprovalRequested,
            ModelPromoted,
        )
    }
    assert set(runtime.consumer.topics) == expected


def test_with_the_only_channel_unset_the_start_stops_naming_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("T_APP_SLACK_URL", raising=False)
    with pytest.raises(ConfigurationError, match=r"no channel is usable .*: set T_APP_SLACK_URL"):
        build(settings(tmp_path))


def test_an_unset_channel_beside_a_usable_one_is_disabled_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(
        CONFIG.replace(
            "    team-slack: {kind: slack, url_env: T_APP_SLACK_URL}\n",
            "    team-slack: {kind: slack, url_env: T_APP_SLACK_URL}\n"
            "    ops-wecom: {kind: wecom, url_env: T_APP_WECOM_URL}\n",
        ).replace("channels: [team-slack]", "channels: [team-slack, ops-wecom]")
    )
    monkeypatch.delenv("T_APP_SLACK_URL", raising=False)
    monkeypatch.setenv("T_APP_WECOM_URL", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k")
    build(Settings(config=path, topic_prefix="tapp."))
    assert "channel team-slack is disabled: T_APP_SLACK_URL is not set" in caplog.text


def test_invalid_knob_names_its_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_APP_SLACK_URL", "https://hooks.slack.com/services/A/B/C")
    monkeypatch.setenv("MLCP_NOTIFIER_MAX_ATTEMPTS", "0")
    with pytest.raises(ConfigurationError, match="MLCP_NOTIFIER_MAX_ATTEMPTS"):
        build(settings(tmp_path))


def test_without_configuration_it_starts_with_no_channel(tmp_path: Path) -> None:
    runtime = build(Settings(topic_prefix="tapp."))
    assert len(runtime.consumer.topics) == 6


def test_a_route_naming_an_unknown_event_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_APP_SLACK_URL", "https://hooks.slack.com/services/A/B/C")
    path = tmp_path / "typo.yaml"
    path.write_text(CONFIG.replace("gate.failed", "gate.fail"))
    with pytest.raises(ConfigurationError, match=r"routes\[0\]\.events: unknown event 'gate.fail'"):
        build(Settings(config=path))
