"""``mlcp demo``: the dev stack, the five services, then the lifecycle played and checked.

Order: dev stack (idempotent) → the run's config → webhook sink + five services under the
supervisor (logs to a file, prefixed) → wait until all are ready → the timeline reader → the
steps, each with its deadline → the summary table. Whatever happens (a failed step, Ctrl-C), the
services are stopped before the command returns; the dev stack keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from mlcp.cli.demo import config as demo_config
from mlcp.cli.demo.inference import Inference
from mlcp.cli.demo.scenario import STEPS, Scenario, StepFailed
from mlcp.cli.demo.timeline import Seen, Timeline, describe
from mlcp.cli.supervise import Supervisor, python_module
from mlcp.cli.up import SERVICES, service_env, state_dir, wait_ready
from mlcp.devstack import StackInfo
from mlcp.policy.acl import load_policy
from mlcp.policy.platform import ModelConfig
from mlcp.runtime.bus import apply as apply_policy
from mlcp.runtime.settings import Settings, settings_from_env

SINK_OFFSET = 19  # the sink listens on port_base + 19 (8199 by default)


@dataclass
class Options:
    """What ``mlcp demo`` was asked for."""

    prefix: str = "demo"
    port_base: int = 8180
    data_dir: Path | None = None
    show_logs: bool = False
    startup_timeout_s: float = 120.0
    deadline_factor: float = 1.0
    """Multiplies every step's deadline (a slow or busy machine)."""


@dataclass
class Outcome:
    """One row of the summary."""

    name: str
    expected: str
    deadline_s: float
    observed: str = "not reached"
    took_s: float | None = None
    ok: bool = False


@dataclass
class Run:
    """Names and places of one demo run."""

    run_id: str
    model: str
    directory: Path
    ports: dict[str, int]
    sink_port: int
    outcomes: list[Outcome] = field(default_factory=list)


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plan(options: Options) -> Run:
    """A fresh run id, model name, directory and ports."""
    run_id = time.strftime("%m%d%H%M%S") + uuid.uuid4().hex[:4]
    if options.port_base:
        ports = {name: options.port_base + i for i, name in enumerate(SERVICES, start=1)}
        sink_port = options.port_base + SINK_OFFSET
    else:
        ports = {name: free_port() for name in SERVICES}
        sink_port = free_port()
    directory = (options.data_dir or state_dir() / "demo") / run_id
    directory.mkdir(parents=True, exist_ok=True)
    return Run(run_id, f"demo-{run_id}", directory, ports, sink_port)


def busy_ports(ports: list[int]) -> list[int]:
    """The ports someone already listens on (a running ``mlcp up`` or an earlier demo)."""
    taken = []
    for port in ports:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                taken.append(port)
    return taken


def service_envs(
    options: Options, run: Run, stack: StackInfo, config_path: Path, token: str
) -> dict[str, dict[str, str]]:
    """Each child's environment: the stack (as the service's own bus principal), the run's
    config, prefix and schemas, the sink."""
    sink = f"http://127.0.0.1:{run.sink_port}"
    base = {
        "MLCP_CONFIG": str(config_path),
        "MLCP_TOPIC_PREFIX": f"{options.prefix}." if options.prefix else "",
        "MLCP_REGISTRY_URL": f"http://127.0.0.1:{run.ports['registry']}",
        # The demo checks what the channels received, so it always uses its own sink.
        "MLCP_SLACK_WEBHOOK_URL": f"{sink}/slack",
        "MLCP_WECOM_WEBHOOK_URL": f"{sink}/wecom",
    }
    envs = {}
    for name, port in run.ports.items():
        env = service_env({**stack.env(f"svc-{name}"), **base}, name, port)
        if options.prefix:
            env["MLCP_DB_SCHEMA"] = f"{options.prefix}_{name}"
        if name == "registry":
            env["MLCP_REGISTRY_BOOTSTRAP_TOKEN"] = token
        envs[name] = env
    return envs


class Demo:
    """One run of the demo, printing as it goes."""

    def __init__(self, options: Options, console: Console) -> None:
        self.options = options
        self.out = console
        self.started = time.monotonic()
        self.run = plan(options)
        self.log: IO[str] = (self.run.directory / "services.log").open("a", encoding="utf-8")
        self.supervisor = Supervisor(self._child_line)
        self.stack: StackInfo | None = None
        self.prefix = f"{options.prefix}." if options.prefix else ""
        self.warm: asyncio.Task[None] | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str, style: str = "dim") -> None:
        self.out.print(f"[{style}]{self.elapsed():+7.1f}s  {escape(text)}[/]")

    def _child_line(self, name: str, color: str, line: str) -> None:
        self.log.write(f"{name:>10} | {line}\n")
        self.log.flush()
        loud = any(w in line for w in ("ERROR", "CRITICAL", "Traceback", "exited with code"))
        if self.options.show_logs or loud:
            self.out.print(f"[{color}]{name:>10} |[/] {escape(line)}")

    def _event_line(self, seen: Seen) -> None:
        who, evidence = describe(seen)
        style = {
            "model.promoted": "bold green",
            "canary.healthy": "green",
            "drift.detected": "bold yellow",
            "model.degraded": "bold red",
            "model.rolled_back": "bold magenta",
            "run.failed": "red",
            "gate.failed": "red",
        }.get(seen.short, "cyan")
        self.out.print(
            f"{seen.at:+7.1f}s  [{style}]{seen.short:<18}[/] {escape(who):<28} {escape(evidence)}"
        )

    # -- phases ------------------------------------------------------------------------------

    async def bring_up(self) -> tuple[ModelConfig, str]:
        """Stack, config, sink and services; returns the model's config and the registry token."""
        from mlcp.devstack import up as stack_up

        run = self.run
        self.say(f"run {run.run_id}: model {run.model}, files in {run.directory}", "bold")
        taken = busy_ports([*run.ports.values(), run.sink_port])
        if taken:
            raise StepFailed(
                f"ports {taken} are in use (a running `mlcp up` or demo?): "
                "stop it, or pass --port-base N (or 0 for free ports)"
            )
        # The demo's own heavy imports (scikit-learn, pandas, Parquet, skops) load while the
        # stack and the services start, not when the first batch is due.
        self.warm = asyncio.create_task(asyncio.to_thread(warm_imports))
        info = await asyncio.to_thread(stack_up, lambda line: self.say(f"stack: {line}"))
        config_path, model_config = demo_config.write(run.model, run.directory)
        token = secrets.token_urlsafe(32)
        self.stack = info
        # The run's topics, with their ACLs, made by the admin (a prefix is a tenant of its own).
        await apply_policy(self.as_principal("admin"), load_policy(), prefix=self.prefix)
        envs = service_envs(self.options, run, info, config_path, token)
        self.supervisor.add(
            "sink", python_module("mlcp.examples.webhook_sink", "--port", str(run.sink_port))
        )
        for name in SERVICES:
            self.supervisor.add(name, python_module(f"mlcp.{name}"), envs[name])
        self.say(
            f"starting the webhook sink and {len(SERVICES)} services "
            f"(logs: {run.directory / 'services.log'}; --logs shows them here)"
        )
        await self.supervisor.start()
        with self.out.status("waiting for the services' /readyz (PostgreSQL, Kafka, consumers)"):
            ready = await wait_ready(run.ports, timeout_s=self.options.startup_timeout_s)
        if not all(ready.values()):
            late = [name for name, ok in ready.items() if not ok]
            raise StepFailed(f"not ready after {self.options.startup_timeout_s:.0f}s: {late}")
        await self._sink_ready()
        self.say("services ready")
        await self.warm
        table = Table(title="mlcp demo services", title_justify="left")
        for column in ("service", "endpoint"):
            table.add_column(column)
        for name, port in run.ports.items():
            table.add_row(name, f"http://127.0.0.1:{port}/readyz  /metrics")
        table.add_row("sink", f"http://127.0.0.1:{run.sink_port}/_sink/requests (Slack, WeCom)")
        self.out.print(table)
        self.say(
            f"all ready; Kafka {info.bootstrap}, topics {self.prefix}mlcp.*, config {config_path}",
            "bold",
        )
        return model_config, token

    def as_principal(self, principal: str) -> Settings:
        """Settings that reach the stack as ``principal`` (the demo plays several roles: the
        pipeline, the inference service, the operator watching the bus)."""
        assert self.stack is not None
        # The services inherit this process's environment: the demo's inference reads artifacts
        # from the root the trainer writes to.
        shared = {k: v for k, v in os.environ.items() if k == "MLCP_ARTIFACT_ROOT"}
        return settings_from_env({**shared, **self.stack.env(principal)}, topic_prefix=self.prefix)

    async def _sink_ready(self) -> None:
        url = f"http://127.0.0.1:{self.run.sink_port}/_sink/requests"
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise StepFailed("the webhook sink did not start")
                await asyncio.sleep(0.2)

    async def play(self, model_config: ModelConfig, token: str) -> None:
        """The steps in order; a missed deadline ends the run (later steps: not reached)."""
        run = self.run
        timeline = Timeline(
            self.as_principal("operator"),
            {run.model, model_config.dataset},
            self.started,
            self._event_line,
        )
        registry_url = f"http://127.0.0.1:{run.ports['registry']}"
        inference = Inference(
            self.as_principal("inference"),
            registry_url,
            token,
            run.model,
            model_config.label,
            model_config.artifact.policy(),
        )
        factor = self.options.deadline_factor
        run.outcomes = [Outcome(s.name, s.expected, s.deadline_s * factor) for s in STEPS]
        await timeline.start()
        await inference.start()
        try:
            scenario = Scenario(
                settings=self.as_principal("pipeline"),
                model=run.model,
                config=model_config,
                data_dir=run.directory / "data",
                timeline=timeline,
                inference=inference,
                monitor_url=f"http://127.0.0.1:{run.ports['monitor']}",
                sink_url=f"http://127.0.0.1:{run.sink_port}",
                say=self.say,
                run_id=run.run_id,
            )
            for step, outcome in zip(STEPS, run.outcomes, strict=True):
                self.out.rule(
                    f"[bold]{step.name}[/]: {escape(step.expected)} (≤ {outcome.deadline_s:.0f}s)"
                )
                began = time.monotonic()
                # A spinner on a terminal says what the step waits for (nothing in a log file).
                with self.out.status(step.name) as status:

                    def waiting(what: str, status: Status = status, o: Outcome = outcome) -> None:
                        status.update(f"{o.name}: waiting for {what} (≤ {o.deadline_s:.0f}s)")

                    scenario.waiting = waiting
                    try:
                        outcome.observed = await step.run(scenario, began + outcome.deadline_s)
                        outcome.ok = True
                    except StepFailed as exc:
                        outcome.observed = str(exc)
                outcome.took_s = time.monotonic() - began
                mark = "[green]ok[/]" if outcome.ok else "[bold red]FAILED[/]"
                self.out.print(f"{self.elapsed():+7.1f}s  {mark} {escape(outcome.observed)}")
                if not outcome.ok:
                    break
        finally:
            await inference.stop()
            await timeline.stop()

    def summary(self, interrupted: bool) -> int:
        """Print the table; the exit code (0 only when every step happened in time)."""
        table = Table(title=f"mlcp demo {self.run.run_id} — summary", title_justify="left")
        for column in ("step", "expected", "observed", "deadline", "took", "ok"):
            table.add_column(column, overflow="fold")
        for o in self.run.outcomes:
            took = "-" if o.took_s is None else f"{o.took_s:.1f}s"
            ok = "[green]✔[/]" if o.ok else "[red]✘[/]"
            table.add_row(o.name, o.expected, escape(o.observed), f"{o.deadline_s:.0f}s", took, ok)
        self.out.print(table)
        passed = sum(o.ok for o in self.run.outcomes)
        total = len(STEPS)
        verdict = "interrupted" if interrupted else ("PASSED" if passed == total else "FAILED")
        self.out.print(
            f"[bold]{verdict}[/]: {passed}/{total} steps in time; wall time {self.elapsed():.1f}s"
        )
        if interrupted:
            return 130
        return 0 if passed == total and self.run.outcomes else 1

    async def stop(self) -> None:
        self.say("stopping the services (the dev stack keeps running: mlcp dev down)")
        await self.supervisor.stop()
        if self.warm is not None:
            await asyncio.gather(self.warm, return_exceptions=True)
        self.log.close()


def warm_imports() -> None:
    """Import what the pipeline and the inference stand-in will need."""
    import pyarrow.parquet  # type: ignore[import-untyped]  # noqa: F401
    import skops.io  # type: ignore[import-untyped]  # noqa: F401

    from mlcp.examples.sklearn import make_rows

    make_rows(1)  # loads scikit-learn's bundled data set once


async def run_demo(options: Options, console: Console) -> int:
    """Play the demo; Ctrl-C (or SIGTERM) stops everything cleanly. Returns the exit code."""
    demo = Demo(options, console)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    try:
        model_config, token = await demo.bring_up()
        await demo.play(model_config, token)
    except StepFailed as exc:
        demo.say(f"cannot run the demo: {exc}", "bold red")
    except asyncio.CancelledError:
        if not interrupted:
            raise
        demo.say("interrupted", "bold yellow")
        task.uncancel()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await demo.stop()
    return demo.summary(interrupted)
