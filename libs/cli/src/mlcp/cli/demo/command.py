"""The ``mlcp demo`` command (registered by ``mlcp.cli.main``)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def demo(
    prefix: Annotated[
        str,
        typer.Option(
            help="Isolation: topics '<prefix>.mlcp.*', schemas '<prefix>_<service>' "
            "('' = the plain names `mlcp up` uses)"
        ),
    ] = "demo",
    port_base: Annotated[
        int,
        typer.Option(help="Services on N+1…N+5, the webhook sink on N+19; 0 = any free ports"),
    ] = 8180,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where runs keep their batches, config and logs "
            "(default: $MLCP_STATE_DIR/demo or ~/.local/state/mlcp/demo)"
        ),
    ] = None,
    logs: Annotated[bool, typer.Option("--logs", help="Show the services' logs inline")] = False,
    deadline_factor: Annotated[
        float, typer.Option(help="Multiply every step's deadline (a slow or busy machine)")
    ] = 1.0,
) -> None:
    """Play the whole lifecycle (data → training → gates → canary → production, drift →
    retraining, a degraded canary → rollback, alerts) on the dev stack and check every step."""
    from mlcp.cli.demo.runner import Options, run_demo

    if prefix and not re.fullmatch(r"[a-z][a-z0-9_]{0,30}", prefix):
        Console(stderr=True).print(
            "[bold red]error:[/] --prefix must be lowercase letters, digits and _ (≤ 31)"
        )
        raise typer.Exit(2)
    if not 0 <= port_base <= 65535 - 20:
        Console(stderr=True).print("[bold red]error:[/] --port-base must be 0…65515")
        raise typer.Exit(2)
    console = Console(highlight=False)
    if not console.is_terminal:  # a log file or a test: long lines rather than wrapped ones
        console = Console(highlight=False, width=200)
    # aiokafka logs retried metadata hiccups (a topic's leader moving) at ERROR: not news here.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if deadline_factor <= 0:
        Console(stderr=True).print("[bold red]error:[/] --deadline-factor must be positive")
        raise typer.Exit(2)
    options = Options(
        prefix=prefix,
        port_base=port_base,
        data_dir=data_dir,
        show_logs=logs,
        deadline_factor=deadline_factor,
    )
    raise typer.Exit(asyncio.run(run_demo(options, console)))
