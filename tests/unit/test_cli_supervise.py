"""The supervisor behind `mlcp up` and the demo: prefixed output, restart of a crashed child,
and a stop that leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

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


ORPHAN_PARENT = """
import asyncio, sys
from mlcp.cli.supervise import Supervisor

async def main():
    supervisor = Supervisor(lambda *_: None, grace_s=5)
    supervisor.add("child", [sys.executable, "-c", "import time; time.sleep(120)"])
    await supervisor.start()
    print(supervisor.pid("child"), flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_children_stop_when_the_supervisor_is_killed_with_sigkill() -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ORPHAN_PARENT, stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    child_pid = int((await asyncio.wait_for(parent.stdout.readline(), 60)).decode())
    os.kill(child_pid, 0)  # running
    parent.kill()
    await parent.wait()

    async def child_gone() -> bool:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return True
        # Reparented to init (or a subreaper): a zombie until reaped counts as gone.
        stat = Path(f"/proc/{child_pid}/stat").read_text()  # noqa: ASYNC240  (procfs: instant)
        return stat.split()[2] == "Z"

    await wait_for(child_gone, timeout=20, what="the orphaned child to stop")
