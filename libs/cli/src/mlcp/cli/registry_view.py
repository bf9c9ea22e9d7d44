"""Rich renderings of the registry's JSON answers (pure: JSON in, renderables out).

They show what a person needs at a glance; ``--json`` prints the registry's answer unchanged
for scripts, so nothing here has to be complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

STATUS_STYLE = {
    "candidate": "cyan",
    "approved": "blue",
    "canary": "yellow",
    "production": "bold green",
    "archived": "dim",
    "rejected": "red",
}


def when(value: Any) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM:SS`` (its own offset kept out of the way)."""
    if not isinstance(value, str):
        return "-" if value is None else str(value)
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def scalar(value: Any) -> str:
    """A JSON value in a cell: short floats, ``-`` for null, compact JSON for the rest."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def status(value: Any) -> Text:
    text = scalar(value)
    return Text(text, style=STATUS_STYLE.get(text, ""))


def short(value: Any, keep: int = 12) -> str:
    """A digest or id cut to its first ``keep`` characters."""
    text = scalar(value)
    return text if len(text) <= keep + 1 else text[:keep] + "…"


def metrics_line(metrics: Any, limit: int = 3) -> str:
    if not isinstance(metrics, Mapping):
        return "-"
    items = [f"{k}={scalar(v)}" for k, v in sorted(metrics.items())[:limit]]
    more = len(metrics) - limit
    return " ".join(items) + (f" (+{more})" if more > 0 else "")


def table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> Table:
    """A table whose cells are plain text (registry data is never read as markup)."""
    out = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*[c if isinstance(c, Text) else Text(scalar(c)) for c in row])
    return out


def key_values(title: str | None, pairs: Iterable[tuple[str, Any]]) -> Table:
    out = Table(title=title, title_justify="left", show_header=False, show_edge=False, box=None)
    out.add_column(style="bold")
    out.add_column()
    for key, value in pairs:
        out.add_row(key, value if isinstance(value, Text) else Text(scalar(value)))
    return out


def page_note(body: Mapping[str, Any], noun: str) -> RenderableType:
    """How many rows, and how to get the next page when there is one."""
    count = len(body.get("items", []))
    following = body.get("next_offset")
    text = f"{count} {noun}" + ("" if count == 1 else "s")
    if following is not None:
        text += f"; more with --offset {following}"
    return Text(text, style="dim")


def models(body: Mapping[str, Any]) -> RenderableType:
    rows = [
        (
            m["name"],
            m.get("latest_version"),
            m.get("production"),
            f"{m['canary']} ({scalar(m.get('canary_percent'))}%)" if m.get("canary") else None,
            when(m.get("created_at")),
        )
        for m in body["items"]
    ]
    columns = ("model", "latest", "production", "canary", "created")
    return Group(table(None, columns, rows), page_note(body, "model"))


def versions(model: str, body: Mapping[str, Any]) -> RenderableType:
    rows = [
        (
            v["version"],
            status(v.get("status")),
            v.get("bump"),
            v.get("run_id"),
            metrics_line(v.get("metrics")),
            v.get("owner"),
            when(v.get("created_at")),
        )
        for v in body["items"]
    ]
    columns = ("version", "status", "bump", "run", "metrics", "registered by", "created")
    return Group(table(f"{model} versions", columns, rows), page_note(body, "version"))


def runs(model: str, body: Mapping[str, Any]) -> RenderableType:
    rows = [
        (
            v.get("run_id"),
            v["version"],
            status(v.get("status")),
            metrics_line(v.get("metrics"), limit=4),
            when(v.get("created_at")),
        )
        for v in body["items"]
    ]
    columns = ("run", "version", "status", "metrics", "registered")
    return Group(table(f"{model} runs (registered)", columns, rows), page_note(body, "run"))


def version(v: Mapping[str, Any]) -> RenderableType:
    """One version: identity and status, artifact, metrics, params, datasets."""
    head = key_values(
        f"{v.get('model')} {v.get('version')}",
        [
            ("status", status(v.get("status"))),
            ("status since", when(v.get("status_changed_at"))),
            ("registered", f"{when(v.get('created_at'))} by {scalar(v.get('owner'))}"),
            ("previous", f"{scalar(v.get('previous_version'))} (bump {scalar(v.get('bump'))})"),
            ("run", v.get("run_id")),
            ("reason", v.get("training_reason")),
            ("code", f"{scalar(v.get('code_version'))} {scalar(v.get('entrypoint'))}"),
            ("duration", f"{scalar(v.get('duration_s'))} s"),
            ("label", v.get("label")),
            ("features", len(v.get("feature_schema") or [])),
            ("artifact", v.get("artifact_uri")),
            ("  sha256", v.get("artifact_sha256")),
            ("  format", f"{scalar(v.get('artifact_format'))}, {scalar(v.get('artifact_size'))} B"),
        ],
    )
    parts: list[RenderableType] = [head]
    metrics = v.get("metrics") or {}
    baseline = v.get("baseline") or {}
    base_metrics = baseline.get("metrics", {}) if isinstance(baseline, Mapping) else {}
    base_name = f"baseline {baseline.get('version')}" if base_metrics else "baseline"
    parts.append(
        table(
            "metrics",
            ("metric", "value", base_name),
            [(k, metrics[k], base_metrics.get(k)) for k in sorted(metrics)],
        )
    )
    params = v.get("params") or {}
    parts.append(table("params", ("param", "value"), [(k, params[k]) for k in sorted(params)]))
    parts.append(datasets(v.get("datasets") or []))
    return Group(*parts)


def datasets(items: Iterable[Mapping[str, Any]]) -> Table:
    rows = []
    for d in items:
        batches = list(d.get("batch_ids") or [])
        span = batches[0] if len(batches) == 1 else f"{batches[0]} … {batches[-1]}"
        rows.append(
            (
                d.get("dataset"),
                f"{len(batches)}: {span}" if batches else "-",
                d.get("rows"),
                d.get("completeness"),
                short(d.get("sha256")),
            )
        )
    return table("datasets", ("dataset", "batches", "rows", "completeness", "sha256"), rows)


def lineage(body: Mapping[str, Any]) -> RenderableType:
    """Version → run → data batches → artifact, as a tree."""
    run = body.get("run") or {}
    artifact = body.get("artifact") or {}
    tree = Tree(
        Text(f"{body.get('model')} {body.get('version')}", style="bold")
        + Text(
            f"  previous {scalar(body.get('previous_version'))}, bump {scalar(body.get('bump'))}"
        )
    )
    branch = tree.add(
        Text(f"run {scalar(run.get('run_id'))}  reason {scalar(run.get('reason'))}", style="bold")
    )
    branch.add(Text(f"code {scalar(run.get('code_version'))} {scalar(run.get('entrypoint'))}"))
    branch.add(Text(f"params {scalar(run.get('params'))}"))
    branch.add(Text(f"metrics {scalar(run.get('metrics'))}"))
    env = run.get("environment") or {}
    if isinstance(env, Mapping) and env:
        packages = env.get("packages") or {}
        listed = " ".join(f"{k}=={v}" for k, v in sorted(packages.items()))
        branch.add(Text(f"environment python {scalar(env.get('python'))} {listed}".rstrip()))
    branch.add(
        Text(
            f"took {scalar(run.get('duration_s'))} s, reported by {scalar(run.get('reported_by'))}"
            f" (event {scalar(run.get('event_id'))})"
        )
    )
    data = tree.add(Text("data", style="bold"))
    for d in body.get("datasets") or []:
        node = data.add(
            Text(f"{scalar(d.get('dataset'))}: {scalar(d.get('rows'))} rows, sha256 ")
            + Text(scalar(d.get("sha256")))
        )
        batches = d.get("batches") or [{"batch_id": b} for b in d.get("batch_ids") or []]
        for b in batches:
            node.add(batch_line(b))
    tree.add(
        Text("artifact ", style="bold")
        + Text(
            f"{scalar(artifact.get('uri'))}  {scalar(artifact.get('format'))}, "
            f"{scalar(artifact.get('size_bytes'))} B, sha256 {scalar(artifact.get('sha256'))}"
        )
    )
    return tree


def batch_line(batch: Mapping[str, Any]) -> Text:
    """One training batch of a lineage: id, rows, uri, sha256 (and its re-announcements)."""
    line = Text(f"batch {scalar(batch.get('batch_id'))}", style="bold")
    line += Text(f"  {scalar(batch.get('rows'))} rows  {scalar(batch.get('uri'))}  sha256 ")
    line += Text(scalar(batch.get("sha256")))
    if duplicates := batch.get("duplicates"):
        line += Text(f"  (re-announced {duplicates}×, counted once)", style="dim")
    return line


def model_aliases(body: Mapping[str, Any]) -> RenderableType:
    """A model's aliases and rollout state (``GET /models/{model}``)."""
    aliases = body.get("aliases") or {}
    rollout = body.get("rollout") or {}
    alias_table = table(
        f"{body.get('name')} aliases",
        ("alias", "version"),
        [(name, aliases[name]) for name in sorted(aliases)],
    )
    canary = rollout.get("canary")
    state = key_values(
        "rollout",
        [
            ("latest version", body.get("latest_version")),
            ("production", rollout.get("production")),
            ("  since", when(rollout.get("production_since"))),
            ("  rollback target", rollout.get("rollback_target")),
            ("canary", f"{canary} at {scalar(rollout.get('canary_percent'))}%" if canary else None),
        ],
    )
    return Group(alias_table, state)


def alias(body: Mapping[str, Any], etag: str | None = None) -> RenderableType:
    artifact = body.get("artifact") or {}
    pairs: list[tuple[str, Any]] = [
        ("version", body.get("version")),
        ("status", status(body.get("status"))),
        ("traffic", f"{scalar(body.get('traffic_percent'))}%"),
        ("since", when(body.get("updated_at"))),
        ("artifact", artifact.get("uri")),
        ("  sha256", artifact.get("sha256")),
        ("  format", artifact.get("format")),
    ]
    if etag:
        pairs.append(("etag", etag))
    return key_values(f"{body.get('model')} @ {body.get('alias')}", pairs)


def alias_at(body: Mapping[str, Any]) -> RenderableType:
    change = body.get("change") or {}
    return key_values(
        f"{body.get('model')} @ {body.get('alias')} at {when(body.get('time'))}",
        [
            ("version", body.get("version") or "(none)"),
            ("since", when(body.get("since"))),
            ("set by", change.get("actor")),
            ("reason", change.get("reason")),
        ],
    )


def alias_history(model: str, alias_name: str, body: Mapping[str, Any]) -> RenderableType:
    rows = [
        (
            when(h.get("at")),
            h.get("version") or "(removed)",
            h.get("previous_version"),
            h.get("traffic_percent"),
            h.get("actor"),
            h.get("reason"),
            short(h.get("cause_event_id")),
        )
        for h in body["items"]
    ]
    columns = ("at", "version", "previous", "traffic %", "actor", "reason", "cause event")
    return Group(
        table(f"{model} @ {alias_name}, newest first", columns, rows), page_note(body, "change")
    )


def audit(body: Mapping[str, Any]) -> RenderableType:
    rows = [
        (
            r.get("seq"),
            when(r.get("at")),
            r.get("actor"),
            r.get("action"),
            r.get("model"),
            r.get("version"),
            r.get("after"),
        )
        for r in body["items"]
    ]
    columns = ("seq", "at", "actor", "action", "model", "version", "after")
    return Group(table("audit log, oldest first", columns, rows), page_note(body, "row"))


def audit_verify(body: Mapping[str, Any]) -> RenderableType:
    rows = scalar(body.get("rows_checked"))
    checkpoint = body.get("checkpoint")
    if body.get("ok"):
        anchored = (
            f", up to the checkpoint of row {scalar(checkpoint.get('seq'))} signed "
            f"{when(checkpoint.get('signed_at'))}"
            if isinstance(checkpoint, Mapping)
            else ""
        )
        verdict = Text(f"audit log intact: {rows} rows checked{anchored}", "green")
    else:
        problem = body.get("problem")
        what = f" ({scalar(problem)})" if problem else ""
        verdict = Text(
            f"audit log BROKEN at seq {scalar(body.get('first_bad_seq'))}{what}: "
            f"{scalar(body.get('reason'))} ({rows} rows before it hold)",
            "bold red",
        )
    warning = body.get("warning")
    if not warning:
        return verdict
    return Group(verdict, Text(f"warning: {scalar(warning)}", "yellow"))


def aliases_line(aliases: Mapping[str, Any]) -> str:
    """``canary=1.2.0 production=1.1.0`` (the aliases a governance action left)."""
    return " ".join(f"{k}={v}" for k, v in sorted(aliases.items())) or "(no aliases)"


def plain(text: str) -> str:
    """Registry text for a console line printed with markup on."""
    return escape(text)
