"""The monitor refuses, at start, degradation limits it cannot measure — naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcp.monitor.app import build, check_config
from mlcp.policy.platform import parse_platform_config
from mlcp.runtime import Settings
from mlcp.runtime.settings import ConfigurationError

pytestmark = pytest.mark.unit

MODEL = """
models:
  churn:
    dataset: churn-events
    label: churned
    train: m:train
    rollout:
      degrade_if: {%s}
"""


def test_known_limits_are_accepted() -> None:
    limits = '"error_rate": "> 0.05", "accuracy": "< 0.8", "drift_share": ">= 0.5"'
    check_config(parse_platform_config(MODEL % limits))


def test_an_unknown_limit_stops_the_start_with_the_field_named(tmp_path: Path) -> None:
    path = tmp_path / "mlcp.yaml"
    path.write_text(MODEL % '"eror_rate": "> 0.05"')
    with pytest.raises(ConfigurationError) as caught:
        build(Settings(config=path))
    message = str(caught.value)
    assert "models.churn.rollout.degrade_if.eror_rate" in message
    assert "error_rate" in message  # the known names are listed
