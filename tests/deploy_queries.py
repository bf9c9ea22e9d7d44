"""What the shipped monitoring (deploy/grafana, deploy/prometheus) asks Prometheus for.

Shared by the unit checks of the files and by the e2e test that holds every metric name they use
to the ``/metrics`` of running services.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
RULES = sorted((ROOT / "deploy/prometheus/rules").glob("*.yml"))
PROMETHEUS_OWN = frozenset({"up"})
"""Series Prometheus makes itself for every scrape target, not served by a service."""

_NAME_MATCHER = re.compile(r'__name__=~"([^"]+)"')
_RECORDED = re.compile(r"\b([a-z_]+:[a-z0-9_:]+)\b")


def dashboard_queries() -> dict[str, str]:
    """``"<dashboard> / <panel>"`` → PromQL, for every target of every panel."""
    queries = {}
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                queries[f"{path.name} / {panel['title']} / {target['refId']}"] = target["expr"]
    return queries


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in RULES:
        groups += yaml.safe_load(path.read_text())["groups"]
    return groups


def rule_queries() -> dict[str, str]:
    """``"<group> / <record or alert>"`` → PromQL, for every rule."""
    return {
        f"{g['name']} / {r.get('record') or r.get('alert')}": r["expr"]
        for g in rule_groups()
        for r in g["rules"]
    }


def recorded_names() -> set[str]:
    """The series the recording rules make (``level:metric:operations``)."""
    return {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}


def names_in(expr: str) -> tuple[set[str], set[str], set[str]]:
    """(metric names written out, ``__name__`` patterns, recording-rule names) in ``expr``."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    literal = {m for m in re.findall(r"\b[a-z_][a-z0-9_]*\b", without_strings) if "_" in m}
    literal = {m for m in literal if m.startswith("mlcp_")} | (
        {m for m in re.findall(r"\b[a-z_][a-z0-9_]*\b", without_strings)} & PROMETHEUS_OWN
    )
    return literal, set(_NAME_MATCHER.findall(expr)), set(_RECORDED.findall(without_strings))


def served_series(exposition: str) -> set[str]:
    """Every series name a ``/metrics`` answer can carry, whether or not it has samples yet:
    a counter ``x`` serves ``x_total``, a histogram ``x_bucket`` / ``x_sum`` / ``x_count`` …"""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names
