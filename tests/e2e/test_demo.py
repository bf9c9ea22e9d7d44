"""`mlcp demo` as a user runs it: the real command in a subprocess, against the real dev stack,
on its own topic prefix, schemas and free ports, so a developer's running demo is not touched.

The demo checks every step of the lifecycle itself (its exit code says whether each happened in
time); these tests check that it exits 0 with every step in its summary, and that Ctrl-C stops
the services it started.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from mlcp.cli.demo.scenario import STEPS
from tests import conftest
from tests.conftest import Infra

pytestmark = pytest.mark.e2e


def demo_args(prefix: str, data_dir: Path) -> list[str]:
    # Deadlines x3: CI and the shared machine run other suites beside this one.
    return [
        "-m",
        "mlcp.cli",
        "demo",
        "--prefix",
        prefix,
        "--port-base",
        "0",
        "--data-dir",
        str(data_dir),
        "--deadline-factor",
        "3",
    ]


def demo_env(infra: Infra) -> dict[str, str]:
    """The demo finds the dev stack (and its principals' credentials) as a user's would: from
    the environment this test session runs in."""
    if infra.source != "devstack":
        pytest.skip("the demo plays every bus principal: it runs on the dev stack")
    return {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def demo_prefix() -> str:
    """One prefix for both tests: the full run follows an interrupted one on the same topics."""
    token = uuid.uuid4().hex[:10]
    conftest._TOKENS.append(token)  # its topics and schemas are removed at the session's end
    return f"t{token}"


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(600)
async def test_ctrl_c_stops_the_services(
    infra: Infra, demo_prefix: str, spawn: Any, tmp_path: Path
) -> None:
    proc = spawn(demo_args(demo_prefix, tmp_path / "runs"), demo_env(infra), "demo")
    deadline = asyncio.get_running_loop().time() + 300
    while "all ready" not in proc.output():
        assert proc.popen.poll() is None, proc.output()
        assert asyncio.get_running_loop().time() < deadline, proc.output()
        await asyncio.sleep(0.2)
    ports = [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)/readyz", proc.output())]
    assert len(ports) == 5
    assert all(listening(p) for p in ports)
    proc.popen.send_signal(signal.SIGINT)
    assert await proc.wait_exit(timeout=60) == 130, proc.output()
    output = proc.log_path.read_text(errors="replace")
    assert "interrupted" in output
    assert not [p for p in ports if listening(p)]


@pytest.mark.timeout(1900)
async def test_demo_plays_every_step(
    infra: Infra, demo_prefix: str, spawn: Any, tmp_path: Path
) -> None:
    proc = spawn(demo_args(demo_prefix, tmp_path / "runs"), demo_env(infra), "demo")
    code = await proc.wait_exit(timeout=1800)
    output = proc.log_path.read_text(errors="replace")
    assert code == 0, output[-8000:]
    summary = output[output.index("summary") :]
    for step in STEPS:
        row = next((line for line in summary.splitlines() if step.name in line), None)
        assert row is not None, f"{step.name!r} missing from the summary:\n{summary}"
        assert "✔" in row, row
    assert f"PASSED: {len(STEPS)}/{len(STEPS)} steps in time" in output
    # The timeline showed the lifecycle's key events with their timings.
    for short in (
        "training.requested",
        "gate.passed",
        "canary.healthy",
        "drift.detected",
        "model.degraded",
        "model.rolled_back",
    ):
        assert re.search(rf"^\s*\+\d+\.\d+s\s+{re.escape(short)}\b", output, re.M), short
    # The services were stopped: none of their ports answers any more.
    ports = [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)/readyz", output)]
    assert len(ports) == 5
    assert not [p for p in ports if listening(p)]
