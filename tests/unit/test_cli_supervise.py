"""The supervisor behind `mlcp up` and the demo: prefixed output, restart of a crashed child,
and a stop that leaves no process behind."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from mlcp.cli.supervise import Supervisor
from tests.conftest import wait_for

pytestmark = pytest.mark.unit

CHILD = "import sys, time; print('hello from', sys.argv[1], flush=True); time.sleep(60)"


async def test_output_is_prefixed_crashes_restart_and_stop_kills_all() -> None:
    lines: list[tuple[str, str]] = []
    supervisor = Supervisor(lambda name, _color, line: lines.append((name, line)), grace_s=5)
    supervisor.add("alpha", [sys.executable, "-c", CHILD, "alpha"])
    supervisor.add("beta", [sys.executable, "-c", CHILD, "beta"])
    await supervisor.start()

    async def greeted() -> bool:
        return {("alpha", "hello from alpha"), ("beta", "hello from beta")} <= set(lines)

    await wait_for(greeted, timeout=20, what="both children to print")
    first_pid = supervisor.pid("alpha")
    assert first_pid is not None
    await supervisor.kill("alpha", signal.SIGKILL)

    async def restarted() -> bool:
        pid = supervisor.pid("alpha")
        return pid is not None and pid != first_pid

    await wait_for(restarted, timeout=20, what="alpha to be restarted")
    assert ("alpha", "exited with code -9") in lines
    pids = [supervisor.pid("alpha"), supervisor.pid("beta")]
    await supervisor.stop()
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
