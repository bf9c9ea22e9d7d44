"""The audit chain against an insider with the database: real PostgreSQL, real Kafka.

A registry process keys eight audit rows and publishes their signed checkpoints. Then, as
someone with the table owner's rights would (``session_replication_role = replica`` switches
the append-only triggers off), each kind of tampering is done to the table, and each of the
three ways to verify — ``GET /audit/verify``, ``mlcp audit verify`` and ``python -m
mlcp.registry audit-verify`` — must name it at its first bad seq. The table is put back between
kinds. A key rotation keeps old rows verifiable; rows from before the chain was keyed are sealed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from mlcp.cli.main import app as mlcp_cli
from mlcp.registry import chain
from mlcp.registry.app import build
from mlcp.registry.auth import RegistrySettings
from mlcp.registry.keys import Keyring, key_from_seed, new_key_text, parse_keyring
from mlcp.registry.store import audit_log
from tests.builders import drop_schema, wait_ready
from tests.conftest import Infra, Proc, free_port, unique_token, wait_for
from tests.integration.registry_support import BOOTSTRAP_TOKEN, CONFIG

pytestmark = pytest.mark.integration

ROWS = 8
COLUMNS = (
    "seq, at, actor, action, model, version, before, after, cause_event_id, prev_hash, hash, key_id"
)


@dataclass
class Live:
    """A registry process and what the test needs to reach its table, topic and API."""

    url: str
    schema: str
    env: dict[str, str]
    infra: Infra
    snapshot: list[asyncpg.Record]

    async def sql(self, *statements: str, args: tuple[Any, ...] = ()) -> None:
        """Run statements as an insider: in one transaction, the audit triggers switched off."""
        conn = await asyncpg.connect(self.infra.database_url)
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL session_replication_role = replica")
                await conn.execute(f"SET LOCAL search_path TO {self.schema}")
                for statement in statements:
                    await conn.execute(statement, *args)
        finally:
            await conn.close()

    async def rows(self) -> list[chain.AuditRow]:
        conn = await asyncpg.connect(
            self.infra.database_url, server_settings={"search_path": self.schema}
        )
        try:
            async with conn.transaction():
                return [row async for row in audit_log.audit_chain(conn)]
        finally:
            await conn.close()

    async def restore(self) -> None:
        """Put the table back exactly as it was before the tampering."""
        conn = await asyncpg.connect(self.infra.database_url)
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL session_replication_role = replica")
                await conn.execute(f"DELETE FROM {self.schema}.audit_log")
                await conn.executemany(
                    f"INSERT INTO {self.schema}.audit_log ({COLUMNS}) VALUES "
                    "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    [tuple(r) for r in self.snapshot],
                )
        finally:
            await conn.close()

    async def via_api(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60) as client:
            response = await client.get("/audit/verify")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def via_cli(self) -> tuple[int, dict[str, Any]]:
        env = {"MLCP_REGISTRY_URL": self.url, "MLCP_TOKEN": BOOTSTRAP_TOKEN}
        result = await asyncio.to_thread(
            CliRunner().invoke, mlcp_cli, ["audit", "verify", "--json"], env=env
        )
        return result.exit_code, json.loads(result.stdout)

    async def via_command(self, **env: str) -> tuple[int, dict[str, Any], str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mlcp.registry",
            "audit-verify",
            env={**os.environ, **self.env, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode is not None
        text = out.decode()
        return proc.returncode, json.loads(text) if text.strip() else {}, err.decode()


@pytest.fixture(scope="module")
async def live(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    """``python -m mlcp.registry`` with eight keyed audit rows, each checkpoint on Kafka."""
    directory = tmp_path_factory.mktemp("audit")
    config = directory / "mlcp.yaml"
    config.write_text(CONFIG)
    token = unique_token()
    schema, port = f"audit_{token}", free_port()
    # The registry's own principal: it writes the checkpoints and reads them back (no group).
    env = {**infra.env("svc-registry", prefix=f"t{token}."), "MLCP_DB_SCHEMA": schema}
    proc = Proc(
        ["-m", "mlcp.registry"],
        {
            **os.environ,
            **env,
            "MLCP_HTTP_PORT": str(port),
            "MLCP_CONFIG": str(config),
            "MLCP_REGISTRY_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN,
        },
        directory / "registry.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(proc, url)
        headers = {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as client:
            for n in range(ROWS):  # each new token is one governance action: one audit row
                body = {"principal": f"user-{n}", "grants": [{"role": "viewer"}]}
                assert (await client.post("/tokens", json=body)).status_code == 201
        conn = await asyncpg.connect(infra.database_url)
        try:
            snapshot = await conn.fetch(f"SELECT {COLUMNS} FROM {schema}.audit_log ORDER BY seq")
        finally:
            await conn.close()
        assert [r["seq"] for r in snapshot] == list(range(1, ROWS + 1))
        found = Live(url, schema, env, infra, list(snapshot))

        async def anchored() -> bool:
            checkpoint = (await found.via_api())["checkpoint"]
            return bool(checkpoint and checkpoint["seq"] == ROWS)

        await wait_for(anchored, timeout=30, what="the checkpoint of row 8 on Kafka")
        yield found
    finally:
        proc.stop()
        await drop_schema(infra.database_url, schema)


# --- the tampering ------------------------------------------------------------------------------


async def rehash_without_the_key(live: Live, first: int, last: int) -> None:
    """Change row ``first``'s actor and give rows first..last correctly chained hashes, computed
    the only way someone without the key can: the unkeyed sha256 rule."""
    rows = await live.rows()
    prev = rows[first - 2].hash if first > 1 else chain.GENESIS
    statements = []
    for row in rows[first - 1 : last]:
        entry = {**row.entry, "actor": "mallory"} if row.seq == first else row.entry
        digest = chain.legacy_hash(prev, entry)
        actor = ", actor = 'mallory'" if row.seq == first else ""
        statements.append(
            f"UPDATE audit_log SET prev_hash = '{prev}', hash = '{digest}'{actor} "
            f"WHERE seq = {row.seq}"
        )
        prev = digest
    await live.sql(*statements)


async def forge(live: Live, *, right_hash: bool) -> None:
    """Append row 9: with a garbage hash, or with one correctly chained by the unkeyed rule."""
    rows = await live.rows()
    last = rows[-1]
    entry = {**last.entry, "seq": ROWS + 1, "actor": "mallory", "action": "grant_added"}
    entry.pop("key_id")
    digest = chain.legacy_hash(last.hash, entry) if right_hash else "f" * 64
    await live.sql(
        "INSERT INTO audit_log (seq, at, actor, action, after, prev_hash, hash) "
        "SELECT $1, at, 'mallory', 'grant_added', after, $2, $3 FROM audit_log WHERE seq = $4",
        args=(ROWS + 1, last.hash, digest, ROWS),
    )
    if right_hash:  # `after` and `at` copied: make the hash cover exactly what is stored
        (forged,) = [r for r in await live.rows() if r.seq == ROWS + 1]
        digest = chain.legacy_hash(last.hash, forged.entry)
        await live.sql(f"UPDATE audit_log SET hash = '{digest}' WHERE seq = {ROWS + 1}")


Tamper = Callable[[Live], Awaitable[None]]


def statements(*sql: str) -> Tamper:
    async def run(live: Live) -> None:
        await live.sql(*sql)

    return run


TAMPERING: dict[str, tuple[Tamper, int, str]] = {
    # kind: (what the insider does, first bad seq, problem named)
    "edit actor": (
        statements("UPDATE audit_log SET actor = 'mallory' WHERE seq = 4"),
        4,
        "changed",
    ),
    "edit data": (
        statements("""UPDATE audit_log SET after = '{"principal": "mallory"}' WHERE seq = 4"""),
        4,
        "changed",
    ),
    "edit time": (
        statements("UPDATE audit_log SET at = at - interval '1 day' WHERE seq = 4"),
        4,
        "changed",
    ),
    "re-hash one": (lambda live: rehash_without_the_key(live, 4, 4), 4, "changed"),
    "re-hash all from a point": (
        lambda live: rehash_without_the_key(live, 4, ROWS),
        4,
        "recomputed",
    ),
    "delete first": (statements("DELETE FROM audit_log WHERE seq = 1"), 1, "missing"),
    "delete middle": (statements("DELETE FROM audit_log WHERE seq = 4"), 4, "missing"),
    "delete last 3": (statements("DELETE FROM audit_log WHERE seq > 5"), 6, "truncated"),
    "delete all": (statements("DELETE FROM audit_log"), 1, "emptied"),
    "truncate the table": (statements("TRUNCATE audit_log"), 1, "emptied"),
    "swap two": (
        statements(
            "UPDATE audit_log SET seq = -3 WHERE seq = 3",
            "UPDATE audit_log SET seq = 3 WHERE seq = 6",
            "UPDATE audit_log SET seq = 6 WHERE seq = -3",
        ),
        3,
        "relinked",
    ),
    "forge with wrong hash": (lambda live: forge(live, right_hash=False), ROWS + 1, "forged"),
    "forge with right hash": (lambda live: forge(live, right_hash=True), ROWS + 1, "forged"),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
async def test_every_entry_point_names_each_tampering_at_its_first_bad_seq(
    live: Live, kind: str
) -> None:
    tamper, first_bad, problem = TAMPERING[kind]
    await tamper(live)
    try:
        api = await live.via_api()
        cli_exit, cli = await live.via_cli()
        command_exit, command, stderr = await live.via_command()
        for verdict in (api, cli, command):
            found = (verdict["ok"], verdict["first_bad_seq"], verdict["problem"])
            assert found == (False, first_bad, problem), verdict
            assert verdict["rows_checked"] == first_bad - 1, verdict
            assert verdict["checkpoint"]["seq"] == ROWS, "checked against the newest checkpoint"
        assert (cli_exit, command_exit) == (1, 1)
        assert f"audit log broken at seq {first_bad} ({problem})" in stderr
    finally:
        await live.restore()
    intact = await live.via_api()
    assert (intact["ok"], intact["rows_checked"]) == (True, ROWS), intact


async def test_intact_chain_verifies_the_same_through_every_entry_point(live: Live) -> None:
    api = await live.via_api()
    cli_exit, cli = await live.via_cli()
    command_exit, command, _ = await live.via_command()
    assert (cli_exit, command_exit) == (0, 0)
    for verdict in (api, cli, command):
        assert verdict["ok"] is True
        assert verdict["rows_checked"] == ROWS
        assert verdict["checkpoint"]["seq"] == ROWS
        assert verdict["warning"] is None
    # Without the key the command cannot run (exit 2), and says so.
    code, _, stderr = await live.via_command(MLCP_AUDIT_KEY_FILE="/nonexistent/keyring")
    assert code == 2
    assert "cannot read the audit keyring" in stderr
    # An auditor reads the checkpoints as `operator`, who may read every topic and write none.
    code, verdict, _ = await live.via_command(**live.infra.kafka_env("operator"))
    assert (code, verdict["ok"], verdict["checkpoint"]["seq"]) == (0, True, ROWS), verdict
    # Kafka unreachable: the table alone still verifies, with a warning about what it cannot.
    code, verdict, stderr = await live.via_command(MLCP_KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert (code, verdict["ok"], verdict["checkpoint"]) == (0, True, None)
    assert "cannot be detected" in verdict["warning"]


# --- keys ---------------------------------------------------------------------------------------


async def start_registry(infra: Infra, schema: str, keyring: Keyring, tmp: Path) -> Any:
    config = tmp / "mlcp.yaml"
    config.write_text(CONFIG)
    settings = infra.settings(
        "svc-registry",
        topic_prefix=f"t{schema}.",
        db_schema=schema,
        http_port=0,
        config=config,
    )
    runtime = build(settings, RegistrySettings(bootstrap_token=BOOTSTRAP_TOKEN), keyring)
    await runtime.start()
    return runtime


async def api_verdict(runtime: Any, want_seq: int) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=runtime.http_app())
    headers = {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://r", headers=headers) as c:

        async def checked() -> dict[str, Any] | None:
            verdict = dict((await c.get("/audit/verify")).json())
            checkpoint = verdict["checkpoint"]
            return verdict if checkpoint and checkpoint["seq"] == want_seq else None

        verdict: dict[str, Any] = await wait_for(checked, what=f"checkpoint {want_seq}")
        return verdict


async def add_tokens(runtime: Any, n: int) -> None:
    transport = httpx.ASGITransport(app=runtime.http_app())
    headers = {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://r", headers=headers) as c:
        for i in range(n):
            assert (await c.post("/tokens", json={"principal": f"p{i}"})).status_code == 201


async def verify_command(infra: Infra, schema: str, keyring_text: str) -> tuple[int, Any]:
    env = {
        **os.environ,
        **infra.env("svc-registry", prefix=f"t{schema}."),
        "MLCP_DB_SCHEMA": schema,
        "MLCP_AUDIT_KEY": keyring_text,
    }
    env.pop("MLCP_AUDIT_KEY_FILE", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mlcp.registry", "audit-verify", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return int(proc.returncode or 0), json.loads(out)


async def test_key_rotation_keeps_old_rows_verifiable(
    infra: Infra, unique: str, tmp_path: Path
) -> None:
    schema = f"audit_rot_{unique}"
    old, new = new_key_text(), new_key_text()
    old_id, new_id = (parse_keyring(k, where="test").active.key_id for k in (old, new))
    try:
        runtime = await start_registry(infra, schema, parse_keyring(old, where="t"), tmp_path)
        try:
            await add_tokens(runtime, 3)
            assert (await api_verdict(runtime, 3))["ok"]
        finally:
            await runtime.stop()
        # Rotation: the new key first (active), the old one kept below it (retired).
        rotated = f"{new}\n{old}"
        runtime = await start_registry(infra, schema, parse_keyring(rotated, where="t"), tmp_path)
        try:
            await add_tokens(runtime, 3)
            verdict = await api_verdict(runtime, 6)
            assert (verdict["ok"], verdict["rows_checked"]) == (True, 6), verdict
            assert verdict["checkpoint"]["key_id"] == new_id
            conn = await asyncpg.connect(infra.database_url)
            try:
                ids = await conn.fetch(f"SELECT key_id FROM {schema}.audit_log ORDER BY seq")
            finally:
                await conn.close()
            assert [r["key_id"] for r in ids] == [old_id] * 3 + [new_id] * 3
        finally:
            await runtime.stop()
        code, verdict = await verify_command(infra, schema, rotated)
        assert (code, verdict["ok"], verdict["rows_checked"]) == (0, True, 6), verdict
        # A keyring that lost the retired key cannot vouch for the rows it keyed, and says why.
        code, verdict = await verify_command(infra, schema, new)
        assert (code, verdict["first_bad_seq"], verdict["problem"]) == (1, 1, "unknown_key")
    finally:
        await drop_schema(infra.database_url, schema)


async def test_rows_from_before_the_keyed_chain_are_sealed_at_the_first_start(
    infra: Infra, unique: str, tmp_path: Path
) -> None:
    schema = f"audit_legacy_{unique}"
    keyring = Keyring([key_from_seed(os.urandom(32))])
    try:
        # An existing deployment: its audit_log holds rows of the old unkeyed sha256 chain.
        runtime = await start_registry(infra, schema, keyring, tmp_path)
        await runtime.stop()
        prev, legacy = chain.GENESIS, []
        for seq in (1, 2, 3):
            entry = audit_log.audit_entry(
                seq=seq, at=_at(seq), actor="alice", action="promotion", model="churn",
                version="1.0.0", before=None, after={"n": seq}, cause_event_id=None,
            )  # fmt: skip
            digest = chain.legacy_hash(prev, entry)
            legacy.append((seq, _at(seq), json.dumps({"n": seq}), prev, digest))
            prev = digest
        conn = await asyncpg.connect(infra.database_url)
        try:
            await conn.executemany(
                f"""INSERT INTO {schema}.audit_log (seq, at, actor, action, model, version,
                        after, prev_hash, hash)
                    VALUES ($1, $2, 'alice', 'promotion', 'churn', '1.0.0', $3, $4, $5)""",
                legacy,
            )
        finally:
            await conn.close()
        runtime = await start_registry(infra, schema, keyring, tmp_path)
        try:
            verdict = await api_verdict(runtime, 4)  # the seal: row 4, keyed, checkpointed
            assert (verdict["ok"], verdict["rows_checked"]) == (True, 4), verdict
            transport = httpx.ASGITransport(app=runtime.http_app())
            headers = {"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://r", headers=headers
            ) as client:
                seal = (await client.get("/audit", params={"action": "chain_anchored"})).json()
            (row,) = seal["items"]
            assert row["after"]["legacy_rows"] == 3
            assert row["after"]["legacy_chain_ok"] is True
            assert row["prev_hash"] == prev
        finally:
            await runtime.stop()
    finally:
        await drop_schema(infra.database_url, schema)


def _at(seq: int) -> Any:
    from datetime import UTC, datetime

    return datetime(2025, 1, 1, 12, seq, tzinfo=UTC)
