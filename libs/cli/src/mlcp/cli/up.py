"""``mlcp up``: the dev stack plus the five services under a supervisor, until Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from mlcp.cli.supervise import Supervisor, python_module
from mlcp.devstack import StackInfo

SERVICES = {
    "registry": 8081,
    "trainer": 8082,
    "gatekeeper": 8083,
    "monitor": 8084,
    "notifier": 8085,
}

SINK_PORT = 8099


def default_config() -> Path | None:
    """deploy/mlcp.example.yaml when run from a checkout of the repository."""
    candidate = Path.cwd() / "deploy" / "mlcp.example.yaml"
    return candidate if candidate.is_file() else None


def state_dir() -> Path:
    """Where the local tools keep their state (``MLCP_STATE_DIR``, as the dev stack does)."""
    return Path(os.environ.get("MLCP_STATE_DIR") or "~/.local/state/mlcp").expanduser()


def dev_audit_key(base: dict[str, str]) -> dict[str, str]:
    """The registry's audit keyring for local runs: the one configured, else a development
    keyring in the state directory, created by the registry on first use (it says so)."""
    configured = ("MLCP_AUDIT_KEY", "MLCP_AUDIT_KEY_FILE")
    if any(base.get(name) or os.environ.get(name) for name in configured):
        return {}
    return {
        "MLCP_AUDIT_KEY_FILE": str(state_dir() / "audit-keyring"),
        "MLCP_AUDIT_KEY_CREATE": "true",
    }


def service_env(base: dict[str, str], name: str, port: int) -> dict[str, str]:
    """A service's environment: the stack's addresses, its port, readable logs (and for the
    registry its audit key)."""
    env = {**base, "MLCP_HTTP_PORT": str(port), "MLCP_LOG_FORMAT": "text"}
    return {**env, **dev_audit_key(base)} if name == "registry" else env


async def wait_ready(ports: dict[str, int], timeout_s: float = 90.0) -> dict[str, bool]:
    """Poll every service's /readyz until all answer 200 or the deadline passes."""
    ready = dict.fromkeys(ports, False)
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while not all(ready.values()) and time.monotonic() < deadline:
            for name, port in ports.items():
                if ready[name]:
                    continue
                try:
                    response = await client.get(f"http://127.0.0.1:{port}/readyz")
                    ready[name] = response.status_code == 200
                except httpx.HTTPError:
                    pass
            if not all(ready.values()):
                await asyncio.sleep(0.25)
    return ready


async def run_services(
    env: dict[str, str],
    emit: Callable[[str, str, str], None],
    on_ready: Callable[[dict[str, bool]], None],
    *,
    stack: StackInfo,
    stop: asyncio.Event | None = None,
) -> None:
    """Start the services, each as its own bus principal, report readiness, run until
    SIGINT/SIGTERM (or ``stop``)."""
    supervisor = Supervisor(emit)
    env = dict(env)
    if not (env.get("MLCP_SLACK_WEBHOOK_URL") or env.get("MLCP_WECOM_WEBHOOK_URL")):
        # No real channel configured: a local recording sink stands in for Slack and WeCom.
        supervisor.add(
            "sink", python_module("mlcp.examples.webhook_sink", "--port", str(SINK_PORT))
        )
        env["MLCP_SLACK_WEBHOOK_URL"] = f"http://127.0.0.1:{SINK_PORT}/slack"
        env["MLCP_WECOM_WEBHOOK_URL"] = f"http://127.0.0.1:{SINK_PORT}/wecom"
    for name, port in SERVICES.items():
        own = {**env, **stack.env(f"svc-{name}")}
        supervisor.add(name, python_module(f"mlcp.{name}"), service_env(own, name, port))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await supervisor.start()
    try:
        on_ready(await wait_ready(SERVICES))
        await stop.wait()
    finally:
        await supervisor.stop()
