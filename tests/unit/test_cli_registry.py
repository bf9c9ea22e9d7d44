"""The registry commands of `mlcp` against a mocked registry (httpx MockTransport): each command
sends the right request with the token, renders the answer (or prints it unchanged with
--json), and maps every refusal and failure to one line on stderr and its exit code — never a
traceback, never the token."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from mlcp.cli import registry as commands
from mlcp.cli import registry_view as view
from mlcp.cli.main import app
from mlcp.cli.registry_client import RegistryClient, describe_detail

pytestmark = pytest.mark.unit

TOKEN = "mlcp_0123456789abcdef_" + "s" * 43
VERSION: dict[str, Any] = {
    "model": "churn",
    "version": "1.3.0",
    "run_id": "run-7",
    "previous_version": "1.2.0",
    "bump": "minor",
    "status": "canary",
    "metrics": {"accuracy": 0.9412345, "latency_p95_ms": 3.2},
    "params": {"C": 1.0, "seed": 7},
    "baseline": {"version": "1.2.0", "metrics": {"accuracy": 0.93}},
    "datasets": [
        {
            "dataset": "churn-events",
            "batch_ids": ["b-1", "b-2", "b-3"],
            "sha256": "ab" * 32,
            "rows": 1200,
            "completeness": 0.98,
        }
    ],
    "feature_schema": [{"name": "a", "dtype": "float64"}],
    "label": "churned",
    "artifact_uri": "file:///tmp/a.skops",
    "artifact_sha256": "cd" * 32,
    "artifact_format": "skops",
    "artifact_size": 2048,
    "reference_profile": {"features": {}},
    "code_version": "3f2a9c1",
    "entrypoint": "mlcp.examples.sklearn:train_logistic",
    "environment": {"python": "3.11.9", "packages": {"numpy": "2.1.0"}},
    "training_reason": "data_threshold",
    "duration_s": 4.2,
    "owner": "mlcp/trainer",
    "cause_event_id": "5b1c7f3e-0000-4000-8000-000000000001",
    "created_at": "2026-11-27T10:00:00.123456+00:00",
    "status_changed_at": "2026-11-27T10:05:00+00:00",
}


def page(items: list[dict[str, Any]], limit: int = 50) -> dict[str, Any]:
    return {"items": items, "limit": limit, "offset": 0, "next_offset": None}


@dataclass
class FakeRegistry:
    """Answers by (method, path); records every request."""

    routes: dict[tuple[str, str], httpx.Response | Exception] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.routes.get((request.method, request.url.path))
        if answer is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        if isinstance(answer, Exception):
            raise answer
        return answer

    def body(self, index: int = -1) -> Any:
        content = self.requests[index].content
        return json.loads(content) if content else None


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeRegistry:
    registry = FakeRegistry()

    def connect(url: str, token: str | None) -> RegistryClient:
        return RegistryClient(url, token, transport=httpx.MockTransport(registry.handle))

    monkeypatch.setattr(commands, "connect", connect)
    monkeypatch.setenv("MLCP_TOKEN", TOKEN)
    monkeypatch.delenv("MLCP_REGISTRY_URL", raising=False)
    return registry


@pytest.fixture
def mlcp() -> Callable[..., Any]:
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
        result = runner.invoke(app, list(args), env=env)
        assert "Traceback" not in result.output + result.stderr
        assert TOKEN not in result.output + result.stderr, "the token is never printed"
        return result

    return invoke


def test_models_table_json_and_the_token_in_the_header(fake: FakeRegistry, mlcp: Any) -> None:
    body = page(
        [
            {
                "name": "churn",
                "created_at": "2026-11-27T10:00:00+00:00",
                "latest_version": "1.3.0",
                "production": "1.2.0",
                "canary": "1.3.0",
                "canary_percent": 10.0,
            }
        ],
        limit=5,
    )
    body["next_offset"] = 5
    fake.routes[("GET", "/models")] = httpx.Response(200, json=body)

    result = mlcp("models", "--prefix", "ch", "--limit", "5")
    assert result.exit_code == 0, result.output
    for text in ("churn", "1.3.0 (10%)", "1.2.0", "2026-11-27 10:00:00", "--offset 5"):
        assert text in result.output
    request = fake.requests[-1]
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert dict(request.url.params) == {"prefix": "ch", "limit": "5", "offset": "0"}
    assert str(request.url).startswith("http://127.0.0.1:8081/models")

    result = mlcp("models", "--json", "--registry", "http://reg.example:9000/")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == body, "--json prints the registry's answer unchanged"
    assert fake.requests[-1].url.host == "reg.example"


@pytest.mark.parametrize(
    ("args", "method", "route", "params", "sent"),
    [
        (["versions", "churn", "--status", "canary"], "GET", "/models/churn/versions",
         {"status": "canary", "limit": "50", "offset": "0"}, None),
        (["runs", "churn", "--limit", "3"], "GET", "/models/churn/versions",
         {"limit": "3", "offset": "0"}, None),
        (["version", "churn", "1.3.0"], "GET", "/models/churn/versions/1.3.0", {}, None),
        (["lineage", "churn", "1.3.0"], "GET", "/models/churn/versions/1.3.0/lineage", {}, None),
        (["aliases", "churn"], "GET", "/models/churn", {}, None),
        (["alias", "history", "churn", "production"], "GET",
         "/models/churn/aliases/production/history", {"limit": "50", "offset": "0"}, None),
        (["alias", "show", "churn", "canary", "--at", "2026-11-27T10:00:00Z"], "GET",
         "/models/churn/aliases/canary/at", {"time": "2026-11-27T10:00:00Z"}, None),
        (["audit", "list", "--model", "churn", "--action", "promotion"], "GET", "/audit",
         {"model": "churn", "action": "promotion", "limit": "100", "offset": "0"}, None),
        (["approve", "churn", "1.3.0", "--comment", "looks good"], "POST",
         "/models/churn/versions/1.3.0/stages/approve/approve", {}, {"comment": "looks good"}),
        (["reject", "churn", "1.3.0", "--stage", "sign-off"], "POST",
         "/models/churn/versions/1.3.0/stages/sign-off/reject", {}, {}),
        (["check", "report", "churn", "1.3.0", "--check", "code-review", "--failed",
          "--detail", "2 blockers", "--url", "https://ci/1"], "POST",
         "/models/churn/versions/1.3.0/checks/code-review", {},
         {"status": "failed", "details": "2 blockers", "url": "https://ci/1"}),
        (["promote", "churn", "1.3.0", "--alias", "canary", "--traffic", "25", "--reason", "try"],
         "POST", "/models/churn/aliases/canary", {},
         {"version": "1.3.0", "traffic_percent": 25.0, "reason": "try"}),
        (["rollback", "churn"], "POST", "/models/churn/aliases/production/rollback", {}, {}),
    ],
)  # fmt: skip
def test_each_command_sends_its_request(
    fake: FakeRegistry,
    mlcp: Any,
    args: list[str],
    method: str,
    route: str,
    params: dict[str, str],
    sent: dict[str, Any] | None,
) -> None:
    fake.routes[("GET", "/models/churn/aliases")] = httpx.Response(200, json={})
    fake.routes[(method, route)] = httpx.Response(200, json={"ok": True, "items": []})
    result = mlcp(*args, "--json")
    assert result.exit_code == 0, result.output + result.stderr
    request = fake.requests[-1]
    assert (request.method, request.url.path) == (method, route)
    assert dict(request.url.params) == params
    assert fake.body() == sent


def test_version_details_render_metrics_params_datasets_and_artifact(
    fake: FakeRegistry, mlcp: Any
) -> None:
    fake.routes[("GET", "/models/churn/versions/1.3.0")] = httpx.Response(200, json=VERSION)
    result = mlcp("version", "churn", "1.3.0", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in (
        "canary",
        "accuracy",
        "0.9412",  # short floats
        "baseline 1.2.0",
        "0.93",
        "seed",
        "churn-events",
        "3: b-1 … b-3",
        "1200",
        "file:///tmp/a.skops",
        "cd" * 32,
        "1.2.0 (bump minor)",
    ):
        assert text in result.output, text


def test_alias_show_prints_the_etag_and_promote_sends_if_match(
    fake: FakeRegistry, mlcp: Any
) -> None:
    fake.routes[("GET", "/models/churn/aliases/production")] = httpx.Response(
        200,
        json={
            "model": "churn",
            "alias": "production",
            "version": "1.2.0",
            "status": "production",
            "traffic_percent": 100.0,
            "artifact": {"uri": "file:///a", "sha256": "ab" * 32, "format": "skops"},
            "updated_at": "2026-11-27T10:00:00+00:00",
        },
        headers={"ETag": '"41"'},
    )
    result = mlcp("alias", "show", "churn", "production")
    assert result.exit_code == 0
    assert '"41"' in result.output
    assert "1.2.0" in result.output

    fake.routes[("GET", "/models/churn/aliases")] = httpx.Response(
        200, json={"production": "1.2.0", "canary": "1.3.0"}
    )
    fake.routes[("POST", "/models/churn/aliases/production")] = httpx.Response(
        200, json={"aliases": {"production": "1.3.0"}}
    )
    result = mlcp("promote", "churn", "1.3.0", "--alias", "production", "--if-match", '"41"')
    assert result.exit_code == 0, result.stderr
    assert fake.requests[-1].headers["if-match"] == '"41"'
    assert "canary 1.3.0 → (none), production 1.2.0 → 1.3.0" in result.output


def test_promote_needs_an_alias_and_check_report_a_result(fake: FakeRegistry, mlcp: Any) -> None:
    result = mlcp("promote", "churn", "1.3.0")
    assert result.exit_code == 2
    assert "--alias" in result.stderr
    result = mlcp("check", "report", "churn", "1.3.0", "--check", "ci")
    assert result.exit_code == 2
    assert "--passed" in result.stderr
    result = mlcp("models", "--limit", "0")
    assert result.exit_code == 2
    assert fake.requests == [], "usage errors send nothing"


@pytest.mark.parametrize(
    ("status", "detail", "expected"),
    [
        (401, "unknown token", "not authenticated (401): unknown token (check MLCP_TOKEN"),
        (403, "ci (roles: viewer) lacks the 'promote' permission", "forbidden (403): ci (roles"),
        (404, "model 'nope' has no version '9.9.9'", "not found (404): model 'nope'"),
        (409, "alias 'production' already points to 1.3.0", "conflict (409): alias"),
        (412, 'alias is at ETag "42", not "41"', "precondition failed (412)"),
        (
            [{"loc": ["body", "reason"], "msg": "String should have at least 1 character"}],
            None,
            "invalid input (422): reason: String should have at least 1 character",
        ),
    ],
)
def test_refusals_exit_1_with_the_registry_s_reason(
    fake: FakeRegistry, mlcp: Any, status: Any, detail: Any, expected: str
) -> None:
    code, body = (422, status) if isinstance(status, list) else (status, detail)
    fake.routes[("GET", "/models/churn/aliases")] = httpx.Response(200, json={})
    fake.routes[("POST", "/models/churn/aliases/production")] = httpx.Response(
        code, json={"detail": body}
    )
    result = mlcp("promote", "churn", "1.3.0", "--alias", "production", "--token", TOKEN)
    assert result.exit_code == 1
    assert expected in " ".join(result.stderr.split()), result.stderr
    assert result.stdout == ""


def test_refusals_read_rfc_9457_problem_documents(fake: FakeRegistry, mlcp: Any) -> None:
    fake.routes[("GET", "/models/churn/aliases")] = httpx.Response(200, json={})
    issue = {
        "loc": ["body", "traffic_percent"],
        "msg": "Input should be a finite number",
        "type": "finite_number",
    }
    problem = {
        "type": "about:blank",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "traffic_percent: Input should be a finite number",
        "instance": "/models/churn/aliases/canary",
        "errors": [issue],
    }
    fake.routes[("POST", "/models/churn/aliases/canary")] = httpx.Response(
        422, json=problem, headers={"content-type": "application/problem+json"}
    )
    result = mlcp("promote", "churn", "1.3.0", "--alias", "canary", "--token", TOKEN)
    assert result.exit_code == 1
    said = " ".join(result.stderr.split())
    assert "invalid input (422): traffic_percent: Input should be a finite number" in said


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "cannot reach the registry at"),
        (httpx.ReadTimeout("timed out"), "did not answer in time"),
        (httpx.Response(500, text="Internal Server Error"), "the registry failed (500)"),
        (httpx.Response(503, json={"detail": "not ready"}), "the registry failed (503): not ready"),
        (httpx.Response(200, text="<html>proxy</html>"), "without JSON"),
    ],
)
def test_an_unreachable_or_failing_registry_exits_3(
    fake: FakeRegistry, mlcp: Any, answer: Any, expected: str
) -> None:
    fake.routes[("GET", "/models")] = answer
    result = mlcp("models")
    assert result.exit_code == 3
    assert expected in " ".join(result.stderr.split()), result.stderr


def test_configuration_errors_exit_2_before_any_request(fake: FakeRegistry, mlcp: Any) -> None:
    result = mlcp("models", env={"MLCP_TOKEN": ""})
    assert result.exit_code == 2
    assert "set MLCP_TOKEN or pass --token" in result.stderr
    result = mlcp("models", "--registry", "ftp://host")
    assert result.exit_code == 2
    assert "not an http(s) URL" in result.stderr
    bad = "mlcp_0123456789abcdef_secret with space"
    result = mlcp("models", "--token", bad)
    assert result.exit_code == 2
    assert "spaces or control characters" in result.stderr
    assert "secret with space" not in result.stderr
    assert fake.requests == []


def test_help_never_shows_the_token(fake: FakeRegistry, mlcp: Any) -> None:
    result = mlcp("promote", "--help")
    assert result.exit_code == 0
    assert "MLCP_TOKEN" in result.output
    assert "MLCP_REGISTRY_URL" in result.output
    result = mlcp("--help")
    assert "Registry: look" in result.output
    assert "Exit codes" in result.output


def test_audit_verify_exit_code_follows_the_chain(fake: FakeRegistry, mlcp: Any) -> None:
    checkpoint = {
        "seq": 12,
        "hash": "ab" * 32,
        "key_id": "0123456789abcdef",
        "signed_at": "2026-03-01T12:00:00Z",
    }
    good = {
        "ok": True,
        "rows_checked": 12,
        "first_bad_seq": None,
        "problem": None,
        "reason": None,
        "checkpoint": checkpoint,
        "unanchored_rows": 0,
        "warning": None,
    }
    fake.routes[("GET", "/audit/verify")] = httpx.Response(200, json=good)
    result = mlcp("audit", "verify")
    assert result.exit_code == 0
    assert "intact: 12 rows checked, up to the checkpoint of row 12 signed" in result.output
    bad = {
        **good,
        "ok": False,
        "rows_checked": 9,
        "first_bad_seq": 10,
        "problem": "truncated",
        "reason": "rows 10-12 were deleted from its end",
    }
    fake.routes[("GET", "/audit/verify")] = httpx.Response(200, json=bad)
    result = mlcp("audit", "verify")
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "BROKEN at seq 10 (truncated): rows 10-12 were deleted" in said
    assert "9 rows before it hold" in said
    result = mlcp("audit", "verify", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == bad
    unanchored = {**good, "checkpoint": None, "warning": "no signed checkpoint was found"}
    fake.routes[("GET", "/audit/verify")] = httpx.Response(200, json=unanchored)
    result = mlcp("audit", "verify")
    assert result.exit_code == 0
    assert "warning: no signed checkpoint was found" in result.output


def test_registry_text_is_never_read_as_markup(fake: FakeRegistry, mlcp: Any) -> None:
    fake.routes[("GET", "/models/churn/aliases/production/history")] = httpx.Response(
        200,
        json=page(
            [
                {
                    "id": 3,
                    "alias": "production",
                    "version": None,
                    "previous_version": "1.2.0",
                    "traffic_percent": None,
                    "actor": "ops",
                    "reason": "[bold red]x[/] because",
                    "cause_event_id": None,
                    "at": "2026-11-27T10:00:00+00:00",
                }
            ]
        ),
    )
    result = mlcp("alias", "history", "churn", "production", env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "[bold red]x[/] because" in result.output
    assert "(removed)" in result.output


def test_renderers_take_the_registry_s_real_shapes() -> None:
    console = Console(record=True, width=200)
    lineage = {
        "model": "churn",
        "version": "1.3.0",
        "previous_version": "1.2.0",
        "bump": "minor",
        "run": {
            "run_id": "run-7",
            "reason": "data_threshold",
            "code_version": "3f2a9c1",
            "entrypoint": "m:train",
            "params": {"C": 1.0},
            "metrics": {"accuracy": 0.94},
            "environment": {"python": "3.11.9", "packages": {"numpy": "2.1.0"}},
            "duration_s": 4.2,
            "reported_by": "mlcp/trainer",
            "event_id": "e-1",
        },
        "datasets": [
            {
                **VERSION["datasets"][0],
                "batches": [
                    {
                        "batch_id": f"b-{i}",
                        "uri": f"s3://lake/b-{i}.csv",
                        "rows": 400,
                        "sha256": f"{i}" * 64,
                        "duplicates": 2 if i == 2 else 0,
                    }
                    for i in (1, 2, 3)
                ],
            }
        ],
        "artifact": {"uri": "file:///a", "sha256": "cd" * 32, "format": "skops", "size_bytes": 9},
    }
    console.print(view.lineage(lineage))
    console.print(view.runs("churn", page([VERSION])))
    console.print(view.versions("churn", page([VERSION])))
    text = console.export_text()
    for part in ("run run-7", "numpy==2.1.0", "file:///a", "data_threshold"):
        assert part in text, part
    for i in (1, 2, 3):  # every batch of the lineage with its rows, uri and digest
        assert f"batch b-{i}  400 rows  s3://lake/b-{i}.csv  sha256 {str(i) * 64}" in text
    assert "(re-announced 2×, counted once)" in text
    assert f"churn-events: 1200 rows, sha256 {'ab' * 32}" in text
    assert "accuracy=0.9412 latency_p95_ms=3.2" in text
    assert commands.changes({"production": "1.2.0"}, {"production": "1.2.0"}) == "no alias moved"
    assert describe_detail({"detail": [{"loc": ["query", "limit"], "msg": "too big"}]}) == (
        "query.limit: too big"
    )
