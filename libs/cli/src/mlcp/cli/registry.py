"""The registry commands of ``mlcp``: look at models, versions, aliases, runs, lineage and the
audit log; approve, reject, report checks, promote and roll back.

All of them talk to the registry's HTTP API (docs/registry.md): ``--registry`` /
``MLCP_REGISTRY_URL`` and ``--token`` / ``MLCP_TOKEN``. The registry enforces the permissions;
the CLI only turns its answers into tables (or, with ``--json``, prints them unchanged) and its
refusals into one line on stderr and an exit code (see ``registry_client``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.markup import escape

from mlcp.cli import registry_view as view
from mlcp.cli.registry_client import DEFAULT_URL, CliError, RegistryClient, path
from mlcp.contracts import PRODUCTION

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False)

CONNECTION = "Registry connection"
LOOK = "Registry: look"
ACT = "Registry: act (audited under the token's principal)"

Url = Annotated[
    str,
    typer.Option(
        "--registry",
        envvar="MLCP_REGISTRY_URL",
        help="Registry base URL.",
        rich_help_panel=CONNECTION,
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MLCP_TOKEN",
        help="Registry API token (never printed).",
        show_default=False,
        rich_help_panel=CONNECTION,
    ),
]
AsJson = Annotated[
    bool, typer.Option("--json", help="Print the registry's JSON answer unchanged (for scripts).")
]
Limit = Annotated[int, typer.Option(min=1, max=500, help="Rows per page.")]
Offset = Annotated[int, typer.Option(min=0, help="Rows to skip (see 'more with --offset').")]
Model = Annotated[str, typer.Argument(help="Model name, e.g. churn.", show_default=False)]
Version = Annotated[str, typer.Argument(help="SemVer, e.g. 1.2.0.", show_default=False)]
Reason = Annotated[str | None, typer.Option(help="Why (kept in the alias history and audit).")]
IfMatch = Annotated[
    str | None,
    typer.Option(help="Act only if the alias still has this ETag ('mlcp alias show' prints it)."),
]
Stage = Annotated[str, typer.Option(help="The manual stage's name in MLCP_CONFIG.")]
Comment = Annotated[str | None, typer.Option(help="Comment recorded with the decision.")]


def connect(url: str, token: str | None) -> RegistryClient:
    """The client the commands use (tests replace it to inject a transport)."""
    return RegistryClient(url, token)


@contextmanager
def registry(url: str, token: str | None) -> Iterator[RegistryClient]:
    """A client; any ``CliError`` inside becomes one line on stderr and its exit code."""
    try:
        with connect(url, token) as client:
            yield client
    except CliError as exc:
        err.print(f"[bold red]error:[/] {escape(exc.message)}")
        raise typer.Exit(exc.exit_code) from None


def fetch(url: str, token: str | None, route: str, params: dict[str, Any] | None = None) -> Any:
    """One GET on the registry (errors reported as ``registry`` does)."""
    with registry(url, token) as client:
        return client.get(route, params)


def show(body: Any, as_json: bool, render: RenderableType | None = None) -> None:
    if as_json or render is None:
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        out.print(render)


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """``production 1.1.0 → 1.2.0, canary 1.2.0 → (none)``: what an action moved."""
    moved = [
        f"{name} {before.get(name) or '(none)'} → {after.get(name) or '(none)'}"
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    ]
    return ", ".join(moved) or "no alias moved"


# --- looking ------------------------------------------------------------------------------------


def whoami(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """Who the token belongs to and its live roles."""
    body = fetch(url, token, "/whoami")
    roles = ", ".join(body.get("roles", [])) or "none"
    show(
        body,
        as_json,
        view.key_values(None, [("principal", body.get("principal")), ("roles", roles)]),
    )


def models(
    prefix: Annotated[str | None, typer.Option(help="Only names starting with this.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Models with their latest, production and canary versions."""
    body = fetch(url, token, "/models", {"prefix": prefix, "limit": limit, "offset": offset})
    show(body, as_json, view.models(body))


def versions(
    model: Model,
    status: Annotated[
        str | None,
        typer.Option(help="Only this status: candidate, approved, canary, production, …"),
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Versions of a model, newest first."""
    params = {"status": status, "limit": limit, "offset": offset}
    body = fetch(url, token, path("models", model, "versions"), params)
    show(body, as_json, view.versions(model, body))


def version(
    model: Model,
    version: Version,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """One version: status, metrics, params, datasets, artifact."""
    body = fetch(url, token, path("models", model, "versions", version))
    show(body, as_json, view.version(body))


def runs(
    model: Model,
    limit: Limit = 50,
    offset: Offset = 0,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Training runs that produced a version of the model, newest first.

    The registry knows the runs that finished; queued, running and failed runs live in the
    trainer: `python -m mlcp.trainer.lineage RUN_ID` prints one (with MLCP_DATABASE_URL).
    """
    params = {"limit": limit, "offset": offset}
    body = fetch(url, token, path("models", model, "versions"), params)
    show(body, as_json, view.runs(model, body))


def lineage(
    model: Model,
    version: Version,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Version → training run (code, params, metrics, environment) → data batches → artifact."""
    body = fetch(url, token, path("models", model, "versions", version, "lineage"))
    show(body, as_json, view.lineage(body))


def aliases(
    model: Model, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """A model's aliases and rollout state (production since, rollback target, canary)."""
    body = fetch(url, token, path("models", model))
    show(body, as_json, view.model_aliases(body))


alias_app = typer.Typer(help="One alias: where it points, its history.", no_args_is_help=True)


@alias_app.command("show")
def alias_show(
    model: Model,
    alias: Annotated[str, typer.Argument(help="production, canary or a custom alias.")],
    at: Annotated[
        str | None, typer.Option(help="ISO time: which version the alias pointed to then.")
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """The version behind an alias with its artifact and ETag (or at a past time: --at)."""
    with registry(url, token) as client:
        if at is not None:
            body = client.get(path("models", model, "aliases", alias, "at"), {"time": at})
            render = view.alias_at(body)
        else:
            body, etag = client.get_tagged(path("models", model, "aliases", alias))
            render = view.alias(body, etag)
    show(body, as_json, render)


@alias_app.command("history")
def alias_history(
    model: Model,
    alias: Annotated[str, typer.Argument(help="production, canary or a custom alias.")],
    limit: Limit = 50,
    offset: Offset = 0,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Every change of an alias, newest first: version, previous, who, why, cause event."""
    params = {"limit": limit, "offset": offset}
    body = fetch(url, token, path("models", model, "aliases", alias, "history"), params)
    show(body, as_json, view.alias_history(model, alias, body))


audit_app = typer.Typer(help="The registry's hash-chained audit log.", no_args_is_help=True)


@audit_app.command("list")
def audit_list(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action: promotion, rollback, approval, …")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Only this principal.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time, inclusive.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time, inclusive.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Audit rows, oldest first (needs the auditor or admin role)."""
    params = {
        "model": model,
        "action": action,
        "actor": actor,
        "since": since,
        "until": until,
        "limit": limit,
        "offset": offset,
    }
    body = fetch(url, token, "/audit", params)
    show(body, as_json, view.audit(body))


@audit_app.command("verify")
def audit_verify(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """Recompute the audit log's hash chain; exit 1 if a row does not hold."""
    body = fetch(url, token, "/audit/verify")
    show(body, as_json, view.audit_verify(body))
    if not body.get("ok"):
        raise typer.Exit(1)


# --- acting -------------------------------------------------------------------------------------


def _decide(
    decision: str,
    model: str,
    version: str,
    stage: str,
    comment: str | None,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    with registry(url, token) as client:
        route = path("models", model, "versions", version, "stages", stage, decision)
        body = client.post(route, {"comment": comment})
    event = "ApprovalGranted" if decision == "approve" else "ApprovalRejected"
    done = "approved" if decision == "approve" else "rejected"
    line = f"{done} {model} {version} at stage {stage!r} ({event} {body.get('event_id')})"
    show(body, as_json, view.plain(line))


def approve(
    model: Model,
    version: Version,
    stage: Stage = "approve",
    comment: Comment = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Approve a version's manual stage (needs the approver or admin role)."""
    _decide("approve", model, version, stage, comment, url, token, as_json)


def reject(
    model: Model,
    version: Version,
    stage: Stage = "approve",
    comment: Comment = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Reject a version at a manual stage (needs the approver or admin role)."""
    _decide("reject", model, version, stage, comment, url, token, as_json)


check_app = typer.Typer(help="External checks (CI, code review).", no_args_is_help=True)


@check_app.command("report")
def check_report(
    model: Model,
    version: Version,
    check: Annotated[
        str, typer.Option(help="The external stage's check name (or stage name) in MLCP_CONFIG.")
    ],
    passed: Annotated[bool, typer.Option("--passed/--failed", help="The check's result.")],
    detail: Annotated[str | None, typer.Option(help="Details kept with the result.")] = None,
    link: Annotated[str | None, typer.Option("--url", help="Link to the CI run or review.")] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Report an external check's result for a version (for CI; operator or admin role)."""
    result = "passed" if passed else "failed"
    with registry(url, token) as client:
        route = path("models", model, "versions", version, "checks", check)
        body = client.post(route, {"status": result, "details": detail, "url": link})
    event = body.get("event_id")
    line = f"reported {body.get('check')} {result} for {model} {version} (event {event})"
    show(body, as_json, view.plain(line))


def _move(
    url: str,
    token: str | None,
    model: str,
    route: str,
    sent: dict[str, Any],
    if_match: str | None,
    as_json: bool,
) -> None:
    """POST an alias move and say what moved (the aliases read just before, and after)."""
    with registry(url, token) as client:
        before = client.get(path("models", model, "aliases"))
        body = client.post(route, sent, headers={"If-Match": if_match} if if_match else None)
    show(body, as_json, view.plain(f"{model}: {changes(before, body.get('aliases', {}))}"))


def promote(
    model: Model,
    version: Version,
    alias: Annotated[
        str, typer.Option(help="Alias to point at the version: production, canary, …")
    ],
    traffic: Annotated[
        float | None, typer.Option(min=0, max=100, help="Canary traffic percent (default 10).")
    ] = None,
    reason: Reason = None,
    if_match: IfMatch = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Point an alias at a version by hand (operator or admin role)."""
    sent = {"version": version, "traffic_percent": traffic, "reason": reason}
    _move(url, token, model, path("models", model, "aliases", alias), sent, if_match, as_json)


def rollback(
    model: Model,
    alias: Annotated[str, typer.Option(help="Alias to roll back.")] = PRODUCTION,
    reason: Reason = None,
    if_match: IfMatch = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Roll an alias back: production to its rollback target, a canary removed."""
    route = path("models", model, "aliases", alias, "rollback")
    _move(url, token, model, route, {"reason": reason}, if_match, as_json)


def add_registry_commands(app: typer.Typer) -> None:
    """Put the registry commands on the ``mlcp`` app, grouped in ``--help``."""
    command: Callable[..., None]
    for name, command in (
        ("whoami", whoami),
        ("models", models),
        ("versions", versions),
        ("version", version),
        ("runs", runs),
        ("lineage", lineage),
        ("aliases", aliases),
    ):
        app.command(name, rich_help_panel=LOOK)(command)
    app.add_typer(alias_app, name="alias", rich_help_panel=LOOK)
    app.add_typer(audit_app, name="audit", rich_help_panel=LOOK)
    for name, command in (
        ("approve", approve),
        ("reject", reject),
        ("promote", promote),
        ("rollback", rollback),
    ):
        app.command(name, rich_help_panel=ACT)(command)
    app.add_typer(check_app, name="check", rich_help_panel=ACT)
