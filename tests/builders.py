"""Small helpers shared by tests that run services as processes (no tests of their own)."""

from __future__ import annotations

import asyncpg
import httpx

from tests.conftest import Proc, wait_for


async def drop_schema(database_url: str, schema: str) -> None:
    """Remove a test's PostgreSQL schema and everything in it."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


async def wait_ready(proc: Proc, url: str, *, timeout: float = 90) -> None:
    """Wait until the service process at ``url`` answers /readyz 200; fail with its log if it
    exits first."""

    async def ready() -> bool:
        assert proc.popen.poll() is None, f"the process exited:\n{proc.output()}"
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{url}/readyz", timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(ready, timeout=timeout, what=f"{url}/readyz")
