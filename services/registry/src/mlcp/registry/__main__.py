"""`python -m mlcp.registry`: run the registry service until SIGTERM.

`python -m mlcp.registry audit-verify` instead checks the audit log's hash chain and names the
first row that does not hold (exit 0: intact, 1: broken, 2: cannot reach the database).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import asyncpg

from mlcp.registry import store
from mlcp.registry.app import SERVICE, build
from mlcp.runtime.entry import EXIT_CONFIG, run_service
from mlcp.runtime.settings import ConfigurationError, Settings, load_settings


async def _verify(settings: Settings) -> dict[str, object]:
    schema = settings.db_schema or SERVICE
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": schema})
    try:
        return await store.verify_audit_chain(conn)
    finally:
        await conn.close()


def audit_verify() -> int:
    """Verify the audit chain of the registry's schema; print the result as JSON."""
    try:
        settings = load_settings()
        result = asyncio.run(_verify(settings))
    except (ConfigurationError, OSError, asyncpg.PostgresError) as exc:
        print(f"mlcp: cannot verify the audit log: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(json.dumps(result))
    if not result["ok"]:
        print(
            f"audit log broken at seq {result['first_bad_seq']}: {result['reason']}",
            file=sys.stderr,
        )
        return 1
    return 0


def main() -> None:
    """Start the service with settings from the environment (or run a subcommand)."""
    parser = argparse.ArgumentParser(prog="mlcp-registry", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "audit-verify"], default="serve")
    args = parser.parse_args()
    if args.command == "audit-verify":
        raise SystemExit(audit_verify())
    run_service(build)


if __name__ == "__main__":
    main()
