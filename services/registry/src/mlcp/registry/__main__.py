"""`python -m mlcp.registry`: run the registry service until SIGTERM.

Subcommands:

* ``audit-verify`` checks the audit log against the newest signed checkpoints on Kafka and names
  the first row that does not hold (exit 0: intact, 1: tampered with, 2: cannot run — no key,
  database unreachable). It reads ``MLCP_DATABASE_URL``, ``MLCP_DB_SCHEMA``,
  ``MLCP_KAFKA_BOOTSTRAP`` and the audit keyring (``MLCP_AUDIT_KEY`` / ``MLCP_AUDIT_KEY_FILE``).
* ``audit-keygen`` prints a new audit key (keyring line) on stdout, its id and public key on
  stderr; with ``--file PATH`` it writes a new keyring file (mode 0600) instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import asyncpg

from mlcp.registry.app import SERVICE, build
from mlcp.registry.audit import read_checkpoints, verify_chain
from mlcp.registry.chain import Verdict
from mlcp.registry.keys import AuditSettings, Keyring, load_keyring, new_key_text, parse_keyring
from mlcp.runtime.entry import EXIT_CONFIG, run_service
from mlcp.runtime.settings import ConfigurationError, Settings, load_env_settings, load_settings


async def _verify(settings: Settings, keyring: Keyring) -> Verdict:
    schema = settings.db_schema or SERVICE
    checkpoints, warning = await read_checkpoints(settings, schema, keyring)
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": schema})
    try:
        return await verify_chain(conn, keyring, checkpoints, warning=warning)
    finally:
        await conn.close()


def audit_verify() -> int:
    """Verify the audit chain of the registry's schema; print the verdict as JSON."""
    try:
        settings = load_settings()
        keyring = load_keyring(load_env_settings(AuditSettings))
        verdict = asyncio.run(_verify(settings, keyring))
    except (ConfigurationError, OSError, asyncpg.PostgresError) as exc:
        print(f"mlcp: cannot verify the audit log: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(json.dumps(verdict.as_dict()))
    if verdict.warning:
        print(f"warning: {verdict.warning}", file=sys.stderr)
    if not verdict.ok:
        print(
            f"audit log broken at seq {verdict.first_bad_seq} ({verdict.problem}): "
            f"{verdict.reason}",
            file=sys.stderr,
        )
        return 1
    return 0


def audit_keygen(path: Path | None) -> int:
    """Make a new audit key: print it, or write it as a new keyring file."""
    text = new_key_text()
    key = parse_keyring(text, where="new key").active
    if path is not None:
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            print(f"mlcp: cannot create {path}: {exc.strerror}", file=sys.stderr)
            return EXIT_CONFIG
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"# mlcp registry audit keyring (first key active)\n{text}\n")
    else:
        print(text)
    print(f"key id {key.key_id}, Ed25519 public key {key.public_key_hex}", file=sys.stderr)
    return 0


def main() -> None:
    """Start the service with settings from the environment (or run a subcommand)."""
    parser = argparse.ArgumentParser(
        prog="mlcp-registry",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command", nargs="?", choices=["serve", "audit-verify", "audit-keygen"], default="serve"
    )
    parser.add_argument("--file", type=Path, help="audit-keygen: write a new keyring file here")
    args = parser.parse_args()
    if args.command == "audit-verify":
        raise SystemExit(audit_verify())
    if args.command == "audit-keygen":
        raise SystemExit(audit_keygen(args.file))
    run_service(build)


if __name__ == "__main__":
    main()
