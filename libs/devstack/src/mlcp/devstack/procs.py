"""Process and port plumbing shared by the Kafka and PostgreSQL launchers."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from mlcp.devstack.config import DevstackError

# Popen handles of servers this process launched: polling them reaps the exit status, without
# which a stopped server would linger as a zombie that still "exists" to every pid check.
_children: dict[int, subprocess.Popen[bytes]] = {}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise `up`/`down` across processes (pytest workers, a second terminal)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR so a port in TIME_WAIT after a restart counts as free, as it does for
        # Kafka and PostgreSQL themselves; a live listener still makes bind() fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def describe_listener(port: int) -> str:
    """Best effort 'pid 123 (java)' for whoever listens on `port`, for error messages."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid is None:
                    return "another process"
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except (psutil.Error, OSError):
        pass
    return "another process"


def ensure_ports_free(ports: Mapping[int, str], what: str, hint: str) -> None:
    """Raise one DevstackError naming every taken port; `ports` maps port -> its env var."""
    taken = [(port, var) for port, var in ports.items() if not port_is_free(port)]
    if taken:
        lines = [
            f"  127.0.0.1:{port} is taken by {describe_listener(port)} (or use {var}=<port>)"
            for port, var in taken
        ]
        raise DevstackError(f"Cannot start {what}:\n" + "\n".join(lines) + f"\n{hint}")


def pid_alive(pid: int, cmdline_contains: str | None = None) -> bool:
    """True if `pid` runs (zombies count as dead) and, if given, its command line mentions
    `cmdline_contains` - a pid file can outlive its process and the pid be reused."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if cmdline_contains is None:
            return True
        return any(cmdline_contains in arg for arg in proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def spawn_detached(cmd: Sequence[str], log: Path, cwd: Path) -> int:
    """Start a server in its own session (Ctrl-C in the caller's terminal must not reach it)
    with stdout/stderr appended to `log`; returns its pid."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    return proc.pid


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(pid: int, timeout: float = 30.0, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL when `kill`), wait up to `timeout`, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    if wait_gone(pid, timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_gone(pid, 10.0)


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def run(
    cmd: Sequence[str],
    *,
    what: str,
    hint: str = "",
    timeout: float = 120.0,
    user: str | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    error_lines: Callable[[str], bool] | None = None,
) -> str:
    """Run a helper command and return its output (stdout and stderr together); any failure
    becomes a DevstackError carrying the output's tail (the lines `error_lines` keeps)."""
    # Output goes to a temporary file, not a pipe: `pg_ctl start` leaves a server behind that
    # could hold a pipe open, and reading it would then never finish.
    with tempfile.TemporaryFile("w+") as out:
        try:
            result = subprocess.run(
                list(cmd),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                user=user,
                cwd=cwd,
                env=None if env is None else {**os.environ, **env},
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError as err:
            raise DevstackError(
                f"{what} failed: {err.filename} not found. {hint}".strip()
            ) from None
        except subprocess.TimeoutExpired:
            raise DevstackError(
                f"{what} did not finish within {timeout:.0f} s. {hint}".strip()
            ) from None
        out.seek(0)
        output = out.read()
    if result.returncode != 0:
        lines = [line for line in _ANSI.sub("", output).splitlines() if line.strip()]
        last = "\n".join([line for line in lines if error_lines is None or error_lines(line)][-20:])
        raise DevstackError(f"{what} failed (exit {result.returncode}):\n{last}\n{hint}".rstrip())
    return output
