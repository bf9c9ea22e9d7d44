"""A small forward-only migrations runner: one PostgreSQL schema per service.

Files are ``NNN_description.sql`` in a directory, applied in name order, each in its own
transaction. Applied files are recorded with their sha256; an edited, already-applied file stops
the start-up instead of silently diverging. A session advisory lock makes concurrent starts of
several instances of one service safe.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlcp.runtime.db import Conn

_NAME = re.compile(r"^\d{3,}_[a-z0-9_]+\.sql$")
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class MigrationError(RuntimeError):
    """A migration directory or an applied migration is inconsistent."""


@dataclass(frozen=True)
class Migration:
    """One SQL file of a schema's history."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def runtime_migrations() -> list[Migration]:
    """The tables every service needs: inbox and outbox."""
    folder = resources.files("mlcp.runtime") / "sql"
    return sorted(
        (
            Migration(f"000_{p.name}", p.read_text())
            for p in folder.iterdir()
            if p.name.endswith(".sql")
        ),
        key=lambda m: m.name,
    )


def load_migrations(directory: Path) -> list[Migration]:
    """Read a service's ``migrations/`` folder, rejecting names that would sort ambiguously."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    found = []
    for path in directory.glob("*.sql"):
        if not _NAME.match(path.name):
            raise MigrationError(f"{path}: migration files are named NNN_description.sql")
        found.append(Migration(path.name, path.read_text()))
    # By number, not as text: 1000_x runs after 999_x.
    return sorted(found, key=lambda m: (int(m.name.split("_", 1)[0]), m.name))


async def migrate(conn: Conn, schema: str, migrations: list[Migration]) -> list[str]:
    """Create ``schema`` if needed and apply what is missing; returns the names applied."""
    if not _SCHEMA.match(schema):
        raise MigrationError(f"invalid schema name {schema!r}")
    lock_key = zlib.crc32(f"mlcp-migrate:{schema}".encode())
    await conn.execute("SELECT pg_advisory_lock($1)", lock_key)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {schema}.mlcp_migrations (
                    name text PRIMARY KEY,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {
            r["name"]: r["checksum"]
            for r in await conn.fetch(f"SELECT name, checksum FROM {schema}.mlcp_migrations")
        }
        done: list[str] = []
        for migration in migrations:
            known = applied.get(migration.name)
            if known is not None:
                if known != migration.checksum:
                    raise MigrationError(
                        f"{schema}.{migration.name} was changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            async with conn.transaction():
                await conn.execute(f"SET LOCAL search_path TO {schema}, public")
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {schema}.mlcp_migrations (name, checksum) VALUES ($1, $2)",
                    migration.name,
                    migration.checksum,
                )
            done.append(migration.name)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", lock_key)


def service_migrations_dir(package_file: str) -> Path | None:
    """A service's ``migrations/`` folder: in the package (wheel) or at the service root."""
    here = Path(package_file).resolve().parent
    for candidate in (here / "migrations", here.parents[2] / "migrations"):
        if candidate.is_dir():
            return candidate
    return None
