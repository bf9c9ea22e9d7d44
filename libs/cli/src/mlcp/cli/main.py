"""``mlcp``: the operator CLI (dev stack, events for pipelines, a live view of the bus)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlcp.cli.bus import bus_app, cli_settings, run_on_bus
from mlcp.cli.demo.command import demo
from mlcp.cli.dlq import dlq_app
from mlcp.cli.registry import add_registry_commands
from mlcp.devstack.cli import app as dev_app

if TYPE_CHECKING:
    pass

# The bus commands import the runtime (Kafka clients, FastStream) inside their bodies: the
# registry commands need none of it, and importing it costs seconds of CPU per invocation.

app = typer.Typer(
    help="mlcp — model-governance control plane. The bus and dev-stack commands read the "
    "MLCP_* settings; the registry commands talk to MLCP_REGISTRY_URL with MLCP_TOKEN. "
    "Exit codes: 0 ok, 1 refused by the registry, 2 usage or configuration, "
    "3 registry or Kafka unreachable.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(dev_app, name="dev", help="Dev stack: real Kafka + PostgreSQL on loopback.")
emit_app = typer.Typer(
    help="Publish events (for data pipelines and scripts).", no_args_is_help=True
)
events_app = typer.Typer(help="Look at the bus.", no_args_is_help=True)
app.add_typer(emit_app, name="emit")
app.add_typer(events_app, name="events")
app.add_typer(dlq_app, name="dlq")
app.add_typer(bus_app, name="bus")
add_registry_commands(app)
app.command()(demo)


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version

        # The CLI and the two libraries whose versions decide what goes on the wire.
        parts = [f"{name} {version(f'mlcp-{name}')}" for name in ("contracts", "runtime")]
        print(f"mlcp {version('mlcp-cli')} ({', '.join(parts)})")
        raise typer.Exit()


@app.callback()
def _options(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """mlcp — model-governance control plane."""


err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


@app.command("serve")
def serve(
    model: Annotated[str, typer.Argument(help="The model to serve (its production/canary)")],
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8090,
) -> None:
    """A reference inference server on mlcp.client: POST /predict, /healthz, /readyz, /metrics.
    Reads MLCP_REGISTRY_URL, MLCP_TOKEN, the MLCP_KAFKA_* settings (principal inference) and
    MLCP_ARTIFACT_ROOT (docs/serving.md)."""
    from mlcp.client.serve import run

    run(model, host=host, port=port)


@emit_app.command("data-arrived")
def emit_data_arrived(
    dataset: Annotated[str, typer.Option(help="DataArrived.dataset (feeds the models on it)")],
    uri: Annotated[str, typer.Option(help="Where the batch is: a path, file:// or s3:// URI")],
    batch_id: Annotated[
        str | None,
        typer.Option(help="Batch id (default: sha256-<16 hex of the digest>, the same each time)"),
    ] = None,
    rows: Annotated[
        int | None, typer.Option(help="Rows (default: counted from a local CSV)")
    ] = None,
    sha256: Annotated[
        str | None, typer.Option(help="Digest (default: computed from the file)")
    ] = None,
    completeness: Annotated[
        float | None, typer.Option(help="Share of non-empty cells (default: from the CSV)")
    ] = None,
    correlation_id: Annotated[str | None, typer.Option(help="Lifecycle correlation id")] = None,
) -> None:
    """Announce a batch of training data (DataArrived); waits for Kafka's acknowledgement."""
    from mlcp.artifacts.files import local_path
    from mlcp.cli.emit import file_facts, publish
    from mlcp.contracts import DataArrived

    settings = cli_settings("pipeline")
    path = local_path(uri)
    if path is not None and (rows is None or sha256 is None or completeness is None):
        if not path.is_file():
            err.print(f"[bold red]error:[/] {escape(str(path))} is not a readable file")
            raise typer.Exit(2)
        file_sha, file_rows, file_completeness = file_facts(path)
        sha256 = sha256 or file_sha
        rows = file_rows if rows is None else rows
        completeness = file_completeness if completeness is None else completeness
        uri = path.resolve().as_uri()
    if rows is None or sha256 is None or completeness is None:
        err.print("[bold red]error:[/] a remote URI needs --rows, --sha256 and --completeness")
        raise typer.Exit(2)
    try:
        data = DataArrived(
            dataset=dataset,
            # Stable for the same file: a pipeline that re-runs the command names the same batch
            # (the trainer counts the content once whatever the id).
            batch_id=batch_id or DataArrived.batch_id_for(sha256),
            uri=uri,
            rows=rows,
            sha256=sha256,
            completeness=completeness,
        )
    except ValueError as exc:
        err.print(f"[bold red]invalid event:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    event = run_on_bus(
        settings, publish(settings, data, source="mlcp/cli", correlationid=correlation_id)
    )
    out.print(
        f"published {event.type} id={event.id} dataset={dataset} "
        f"batch_id={data.batch_id} rows={rows}"
    )


@app.command()
def up(
    config: Annotated[
        Path | None, typer.Option(help="Platform YAML (default: MLCP_CONFIG or the example)")
    ] = None,
) -> None:
    """Start the dev stack and the five services with prefixed logs; Ctrl-C stops them."""
    from mlcp.cli.up import SERVICES, default_config, run_services
    from mlcp.devstack import DevstackError
    from mlcp.devstack import up as stack_up

    try:
        info = stack_up(lambda line: err.print(f"[dim]stack[/] {escape(line)}"))
    except DevstackError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    env = info.env()
    chosen = config or (Path(os.environ["MLCP_CONFIG"]) if os.environ.get("MLCP_CONFIG") else None)
    chosen = chosen or default_config()
    if chosen is not None:
        env["MLCP_CONFIG"] = str(chosen.resolve())

    def emit(name: str, color: str, line: str) -> None:
        out.print(f"[{color}]{name:>10} |[/] {escape(line)}")

    def on_ready(ready: dict[str, bool]) -> None:
        table = Table(title="mlcp services", show_lines=False)
        for column in ("service", "ready", "endpoints"):
            table.add_column(column)
        for name, port in SERVICES.items():
            state = "[green]yes[/]" if ready[name] else "[red]no[/]"
            table.add_row(name, state, f"http://127.0.0.1:{port}/readyz  /metrics")
        out.print(table)
        out.print(f"Kafka {info.bootstrap}  PostgreSQL {info.database_url}  config {chosen}")
        out.print("[dim]Ctrl-C stops the services (the dev stack keeps running: mlcp dev down)[/]")

    asyncio.run(run_services(env, emit, on_ready, stack=info))


@events_app.command("tail")
def events_tail(
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest record")] = False,
    type_: Annotated[
        list[str] | None, typer.Option("--type", help="Only types containing this (repeatable)")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per line (topic, partition, offset, key, the whole CloudEvent) "
            "for scripts and jq.",
        ),
    ] = False,
) -> None:
    """Print events as they cross the bus (Ctrl-C stops)."""
    from mlcp.cli.tail import json_line, render, tail

    settings = cli_settings("operator")
    if as_json:

        def emit(record: Any) -> None:
            # print, not rich: one line of JSON exactly as written, flushed for a pipe.
            print(json_line(record, settings.topic_prefix), flush=True)
    else:
        out.print("[dim]      time   type                     subject              data[/]")

        def emit(record: Any) -> None:
            out.print(escape(render(record.value or b"", record.topic, settings.topic_prefix)))

    with contextlib.suppress(KeyboardInterrupt):
        run_on_bus(settings, tail(settings, emit, from_beginning=from_beginning, types=type_))
