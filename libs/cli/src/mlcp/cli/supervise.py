"""Run the five services (and helpers) as child processes with prefixed logs (honcho-style).

A child that dies is restarted with backoff (at most ``max_restarts`` times); SIGINT/SIGTERM
stops every child with SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mlcp.runtime.backoff import backoff_s

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_supervisor(supervisor_pid: int) -> Callable[[], None]:
    """Runs in the child before exec: the kernel sends it SIGTERM when the supervisor dies, even
    by ``kill -9`` (which gives the supervisor no chance to stop its children), so no service
    outlives a killed ``mlcp up`` or ``mlcp demo``. Linux only; elsewhere a no-op."""

    def arm() -> None:
        if not sys.platform.startswith("linux"):
            return
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != supervisor_pid:  # the supervisor died before prctl took effect
            os._exit(1)

    return arm


COLORS = ["cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta"]


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    color: str = "white"
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


class Supervisor:
    """Starts children, prefixes their output, restarts crashed ones, stops them all."""

    def __init__(
        self,
        emit: Callable[[str, str, str], None],
        *,
        max_restarts: int = 3,
        grace_s: float = 10.0,
    ) -> None:
        self._emit = emit  # (name, color, line)
        self._children: dict[str, Child] = {}
        self._max_restarts = max_restarts
        self._grace_s = grace_s
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []

    def add(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Declare a child (started by ``start``)."""
        color = COLORS[len(self._children) % len(COLORS)]
        self._children[name] = Child(name, argv, {**os.environ, **(env or {})}, color)

    async def start(self) -> None:
        """Start every declared child."""
        for child in self._children.values():
            await self._spawn(child)
            self._watchers.append(asyncio.create_task(self._watch(child)))

    def pid(self, name: str) -> int | None:
        """The current pid of ``name`` (None when not running)."""
        process = self._children[name].process
        return process.pid if process is not None and process.returncode is None else None

    async def _spawn(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(
            *child.argv,
            env=child.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops the children
            preexec_fn=_die_with_supervisor(os.getpid()),
        )
        child.started_at = time.monotonic()
        assert child.process.stdout is not None
        child.pumps.append(asyncio.create_task(self._pump(child, child.process.stdout)))

    async def _pump(self, child: Child, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self._emit(child.name, child.color, line.decode(errors="replace").rstrip())

    async def _watch(self, child: Child) -> None:
        while True:
            assert child.process is not None
            code = await child.process.wait()
            if self._stopping:
                return
            self._emit(child.name, child.color, f"exited with code {code}")
            if child.restarts >= self._max_restarts:
                self._emit(child.name, child.color, "not restarted again (too many exits)")
                return
            child.restarts += 1
            await asyncio.sleep(backoff_s(child.restarts, initial_s=2.0, maximum_s=10.0))
            self._emit(child.name, child.color, f"restarting (#{child.restarts})")
            await self._spawn(child)

    async def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a child (fault injection); the watcher restarts it."""
        process = self._children[name].process
        if process is not None and process.returncode is None:
            process.send_signal(sig)

    async def stop(self) -> None:
        """SIGTERM everyone, SIGKILL whoever is still there after the grace period."""
        self._stopping = True
        running = [c.process for c in self._children.values() if c.process is not None]
        for process in running:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace_s
        for process in running:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                await asyncio.wait_for(process.wait(), remaining)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        for watcher in self._watchers:
            watcher.cancel()
        for child in self._children.values():
            for pump in child.pumps:
                with contextlib.suppress(asyncio.CancelledError):
                    await pump


def python_module(module: str, *args: str) -> list[str]:
    """argv running ``python -m module`` with this interpreter."""
    return [sys.executable, "-m", module, *args]
