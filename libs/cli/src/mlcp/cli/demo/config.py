"""The demo's platform configuration: the packaged ``demo.yaml`` with names unique to one run."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mlcp.policy.platform import ModelConfig, parse_platform_config

TEMPLATE_MODEL = "demo"


def template_text() -> str:
    """The packaged configuration (``mlcp/cli/demo/demo.yaml``)."""
    return resources.files("mlcp.cli.demo").joinpath("demo.yaml").read_text(encoding="utf-8")


def render(model: str) -> str:
    """The template with its model renamed to ``model`` and its dataset to ``<model>-events``.

    A fresh model (and dataset) per run keeps runs apart on long-lived topics and schemas: the
    ledger, the versions and the monitor's windows of an earlier run never mix with this one's.
    """
    raw: dict[str, Any] = yaml.safe_load(template_text())
    spec = raw["models"].pop(TEMPLATE_MODEL)
    spec["dataset"] = f"{model}-events"
    raw["models"][model] = spec
    text = yaml.safe_dump(raw, sort_keys=False)
    parse_platform_config(text, source="demo config")  # fail here, not in five services
    return text


def write(model: str, directory: Path) -> tuple[Path, ModelConfig]:
    """Write the run's configuration into ``directory``; returns its path and the model's part."""
    text = render(model)
    path = directory / "mlcp-demo.yaml"
    path.write_text(text, encoding="utf-8")
    return path, parse_platform_config(text).model(model)
