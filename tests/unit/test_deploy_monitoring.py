"""The shipped monitoring is checked: Prometheus's own tool validates the rules and runs their
unit tests, and the Grafana dashboards are well-formed and ask only for series that exist.

``promtool`` comes from Debian's ``prometheus`` package (``make system-deps`` installs it, as CI
does); these tests skip, saying so, only where it is not installed. That every metric named here
is served by the running services is checked in tests/e2e/test_lifecycle_tracing.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from tests.deploy_queries import (
    DASHBOARDS,
    ROOT,
    RULES,
    dashboard_queries,
    names_in,
    recorded_names,
    rule_queries,
)

pytestmark = pytest.mark.unit

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package `prometheus`: `make system-deps`)",
)


def _promtool(*args: str) -> str:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@needs_promtool
def test_promtool_accepts_the_rules_and_the_prometheus_config() -> None:
    assert RULES, "no rule files in deploy/prometheus/rules"
    out = _promtool("check", "rules", *(str(p.relative_to(ROOT)) for p in RULES))
    assert "SUCCESS" in out
    out = _promtool("check", "config", "deploy/prometheus/prometheus.yml")
    assert f"{len(RULES)} rule files found" in out


@needs_promtool
def test_the_rules_unit_tests_pass() -> None:
    out = _promtool("test", "rules", "deploy/prometheus/tests/mlcp.test.yml")
    assert "SUCCESS" in out


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    operations = (ROOT / "docs/operations.md").read_text()
    alerts = [
        rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert len(alerts) >= 10
    tested = (ROOT / "deploy/prometheus/tests/mlcp.test.yml").read_text()
    for rule in alerts:
        assert rule["labels"]["severity"] in ("page", "ticket", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert f"### {rule['alert']}" in operations, f"docs/operations.md: no runbook for {rule}"
        assert f"alertname: {rule['alert']}" in tested, f"{rule['alert']} has no promtool test"


def test_dashboards_are_well_formed_and_use_the_provisioned_datasource() -> None:
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]["uid"]
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] not in uids, f"{path.name}: uid {board['uid']} used twice"
        uids.add(board["uid"])
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == datasource, (path.name, panel["title"])
            assert panel["targets"], (path.name, panel["title"])
            assert all(t["expr"].strip() for t in panel["targets"]), (path.name, panel["title"])
    assert {"mlcp-overview", "mlcp-lifecycle", "mlcp-traffic", "mlcp-delivery"} <= uids


def test_dashboards_and_rules_only_use_recording_rules_that_exist() -> None:
    defined = recorded_names()
    for where, expr in {**dashboard_queries(), **rule_queries()}.items():
        _, _, recorded = names_in(expr)
        assert recorded <= defined, f"{where}: {recorded - defined} is not a recording rule"


def test_names_in_finds_metrics_patterns_and_recorded_series() -> None:
    literal, patterns, recorded = names_in(
        'sum(rate(mlcp_monitor_predictions_total{outcome="mlcp_x_total"}[5m])) / '
        'sum({__name__=~"mlcp_.+_events_handled_total"}) + mlcp:lifecycle_errors:ratio_rate5m '
        "+ on (service) up"
    )
    assert literal == {"mlcp_monitor_predictions_total", "up"}
    assert patterns == {"mlcp_.+_events_handled_total"}
    assert recorded == {"mlcp:lifecycle_errors:ratio_rate5m"}
