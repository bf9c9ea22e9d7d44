"""PostgreSQL connection pools and the errors that mean "the database is not reachable"."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from mlcp.runtime.backoff import Backoff

# A connection as handlers see it: a plain one, or one borrowed from a pool.
Conn = asyncpg.Connection | PoolConnectionProxy

log = logging.getLogger(__name__)

# Errors after which a retry can succeed without anything changing in the event: the server is
# restarting, the network blipped, a connection was dropped. They never send an event to the DLQ.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


async def create_pool(
    dsn: str, *, schema: str, min_size: int = 1, max_size: int = 10, wait_s: float = 60.0
) -> asyncpg.Pool:
    """Open a pool whose connections use ``schema`` first, waiting for the server to come up."""
    deadline = time.monotonic() + wait_s
    backoff = Backoff(0.2, 2.0)
    while True:
        try:
            return await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                server_settings={"search_path": f"{schema},public", "application_name": schema},
                command_timeout=60,
            )
        except TRANSIENT_DB_ERRORS as exc:
            if time.monotonic() > deadline:
                raise
            if backoff.attempt == 0:  # once: waiting at start is normal (compose, a restart)
                log.info("waiting for PostgreSQL (%s: %s)", type(exc).__name__, exc)
            await asyncio.sleep(backoff.next())
