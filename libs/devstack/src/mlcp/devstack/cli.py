"""`mlcp-dev up | down | reset | status`.

Human-readable lines go to stderr and only the `export` lines to stdout, so that
`eval "$(mlcp-dev up)"` sets the environment of the calling shell.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mlcp.devstack import stack
from mlcp.devstack.config import DevstackError
from mlcp.devstack.kafka import KAFKA_VERSION

app = typer.Typer(
    help=(
        f"Dev stack without Docker: Apache Kafka {KAFKA_VERSION} (KRaft) and PostgreSQL on "
        "127.0.0.1. Set MLCP_KAFKA_BOOTSTRAP / MLCP_DATABASE_URL to use existing servers instead; "
        "MLCP_DEV_KAFKA_PORT, MLCP_DEV_KAFKA_TLS_PORT, MLCP_DEV_KAFKA_CONTROLLER_PORT, "
        "MLCP_DEV_POSTGRES_PORT move the "
        "ports; MLCP_STATE_DIR and MLCP_CACHE_DIR move the data/logs and the jar cache."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def _fail(error: DevstackError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(str(error))}")
    return typer.Exit(code=2)


def _timed_progress() -> tuple[Callable[[str], None], Callable[[], float]]:
    started = time.monotonic()

    def elapsed() -> float:
        return time.monotonic() - started

    def say(message: str) -> None:
        err.print(f"[dim]{elapsed():6.1f}s[/] {escape(message)}")

    return say, elapsed


@app.command()
def up() -> None:
    """Start Kafka and PostgreSQL (if not running) and print where they listen."""
    say, elapsed = _timed_progress()
    try:
        info = stack.up(say)
    except DevstackError as error:
        raise _fail(error) from None
    for name, started, external in (
        ("Kafka", info.kafka_started, info.kafka_external),
        ("PostgreSQL", info.postgres_started, info.postgres_external),
    ):
        state = "external" if external else "started" if started else "already running"
        say(f"{name}: {state}")
    err.print(f"[green]ready[/] in {elapsed():.1f} s")
    err.print(f"  Kafka bootstrap: [bold]{info.bootstrap}[/]")
    err.print(f"  PostgreSQL DSN:  [bold]{info.database_url}[/]")
    err.print(
        "  Bus principals:  [bold]mlcp-dev env PRINCIPAL[/] prints the exports of one "
        f"({', '.join(stack.principals())}); add --tls for SASL_SSL on {info.tls_bootstrap}"
    )
    for key, value in info.env().items():
        out.print(f"export {key}={value}", markup=False)


@app.command()
def env(
    principal: Annotated[str, typer.Argument(help="The bus principal, e.g. svc-registry.")],
    tls: Annotated[bool, typer.Option("--tls", help="SASL_SSL on the TLS listener.")] = False,
) -> None:
    """Print the `export` lines that reach the running dev stack as PRINCIPAL.

    `eval "$(mlcp-dev env operator)"` in a shell; the password stays in its file (0600), only
    the file's path is exported.
    """
    try:
        info = stack.current(principal)
    except DevstackError as error:
        raise _fail(error) from None
    for key, value in info.env(principal, tls=tls).items():
        out.print(f"export {key}={shlex.quote(value)}", markup=False)


@app.command()
def password(
    principal: Annotated[str, typer.Argument(help="The bus principal whose password changes.")],
) -> None:
    """Rotate PRINCIPAL's password: a new random one on the broker and in its file. Restart the
    processes that use it; the old password is refused from now on."""
    try:
        path = stack.rotate_password(principal)
    except DevstackError as error:
        raise _fail(error) from None
    err.print(f"new password for {principal} in {path}; restart the processes that use it")


@app.command()
def down() -> None:
    """Stop the Kafka and PostgreSQL that `up` started (external servers are left alone)."""
    say, elapsed = _timed_progress()
    try:
        stopped = stack.down(say)
    except DevstackError as error:
        raise _fail(error) from None
    err.print(f"stopped {', '.join(stopped) or 'nothing (not running)'} in {elapsed():.1f} s")


@app.command()
def reset(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Stop the dev stack and delete its Kafka and PostgreSQL data (topics, schemas, logs)."""
    if not yes and not typer.confirm("Delete all dev-stack Kafka and PostgreSQL data?"):
        raise typer.Exit(code=1)
    say, elapsed = _timed_progress()
    try:
        removed = stack.reset(say)
    except DevstackError as error:
        raise _fail(error) from None
    err.print(f"removed {', '.join(removed) or 'nothing'} in {elapsed():.1f} s")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show what runs: pid, address, and whether it answers. Exit code 1 if something does not."""
    try:
        parts = stack.status()
    except DevstackError as error:
        raise _fail(error) from None
    if as_json:
        rows = {
            name: {**asdict(p), "log": str(p.log) if p.log else None} for name, p in parts.items()
        }
        out.print_json(json.dumps(rows))
    else:
        for p in parts.values():
            mark = f"[{'green' if p.reachable else 'red'}]{'up' if p.reachable else 'down':<4}[/]"
            owner = f"pid {p.pid}" if p.pid else "not running" if p.managed else "external"
            detail = p.detail or (f"log {p.log}" if p.log else "")
            out.print(
                f"{p.name:<9} {mark} {owner:<12} {escape(p.address)}  [dim]{escape(detail)}[/]"
            )
    if not all(p.reachable for p in parts.values()):
        raise typer.Exit(code=1)
