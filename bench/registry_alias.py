"""Registry benchmark: alias resolution and version registration, mlcp vs MLflow's Model Registry.

Both servers run in the same run on the same PostgreSQL (each in its own schema), one uvicorn
worker each (DESIGN.md §11: several workers stall keep-alive responses ~40 ms on the delayed
ACK), and are driven by the same httpx client code:

* alias lookup — mlcp ``GET /models/{m}/aliases/production`` (bearer token checked, plain and
  with ``If-None-Match`` → 304) vs MLflow ``GET /api/2.0/mlflow/registered-models/alias``;
  sequentially (concurrency 1: latency) and with ``--concurrency`` callers (throughput);
* registration — mlcp: a burst of RunFinished events on Kafka, each registered by the handler
  (SemVer, audit row, outbox event), latency = event time → version row committed; MLflow:
  ``POST /api/2.0/mlflow/model-versions/create`` calls.

MLflow is not a project dependency: it runs from an isolated ``uv tool run`` environment
(``mlflow==3.17.2`` with ``psycopg2-binary``), downloaded on first use.

    uv run python bench/registry_alias.py [--quick]

Needs the dev stack (``make dev``) or MLCP_KAFKA_BOOTSTRAP / MLCP_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

from mlcp.contracts import RunFinished, encode_event, new_event

KAFKA = os.environ.get("MLCP_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
DATABASE = os.environ.get("MLCP_DATABASE_URL", "postgresql://mlcp:mlcp@127.0.0.1:55432/mlcp")
MLFLOW = ["uv", "tool", "run", "--python", "3.11", "--from", "mlflow==3.17.2",
          "--with", "psycopg2-binary==2.9.13", "mlflow"]  # fmt: skip
TOKEN = "bench-" + "k" * 40
MODEL = "bench-model"


@dataclass
class Result:
    system: str
    operation: str
    concurrency: int
    latencies_ms: list[float]
    seconds: float

    def row(self) -> list[str]:
        lat = sorted(self.latencies_ms)
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
        return [
            self.system,
            self.operation,
            str(self.concurrency),
            str(len(lat)),
            f"{len(lat) / self.seconds:,.0f}",
            f"{statistics.median(lat):.2f}",
            f"{p(0.95):.2f}",
            f"{p(0.99):.2f}",
        ]

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds

    @property
    def p99(self) -> float:
        lat = sorted(self.latencies_ms)
        return lat[min(len(lat) - 1, int(0.99 * len(lat)))]


def start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A server process writing to ``log``."""
    return subprocess.Popen(
        command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=log.parent
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{what} exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url, timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.3)
    raise SystemExit(f"{what} not ready after {timeout}s")


async def measure(
    call: Callable[[], Awaitable[None]], total: int, concurrency: int
) -> tuple[list[float], float]:
    """Run ``call`` ``total`` times with ``concurrency`` callers; latencies (ms) and wall time."""
    latencies: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start


def run_finished(run_id: str, seed: int, model: str = MODEL) -> RunFinished:
    return RunFinished.model_validate(
        {
            "run_id": run_id,
            "model": model,
            "reason": "manual",
            "params": {"C": 1.0, "seed": seed},
            "metrics": {"accuracy": 0.93},
            "baseline": None,
            "datasets": [{"dataset": "bench", "batch_ids": ["b1"], "sha256": "a" * 64}],
            "feature_schema": [{"name": "x", "dtype": "float64"}],
            "artifact": {"uri": f"file:///tmp/{run_id}.skops", "sha256": "b" * 64,
                         "format": "skops"},
            "reference_profile": {"rows": 1, "features": {}},
            "code_version": "bench",
            "environment": {"python": "3.11"},
            "duration_s": 0.1,
        }
    )  # fmt: skip


async def mlcp_registrations(base: str, prefix: str, schema: str, n: int) -> Result:
    """A burst of ``n`` RunFinished events; per-version latency from event time to commit."""
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all", enable_idempotence=True)
    await producer.start()
    sent: dict[str, float] = {}
    try:
        # Warm-up: the first registration creates the outbox topic and primes the connections.
        warm = new_event(run_finished("warm-up", 0, model="warm-up"), source="bench")
        await producer.send_and_wait(f"{prefix}{warm.type}", encode_event(warm), key=b"warm-up")
        conn = await asyncpg.connect(DATABASE)
        try:
            while not await conn.fetchval(
                f"SELECT count(*) FROM {schema}.versions WHERE model = 'warm-up'"
            ):
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
        start = time.time()
        futures = []
        for i in range(n):
            event = new_event(run_finished(f"run-{i}", i), source="bench")
            sent[event.data.run_id] = event.time.timestamp()
            futures.append(
                await producer.send(
                    f"{prefix}{event.type}", encode_event(event), key=MODEL.encode()
                )
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    conn = await asyncpg.connect(DATABASE)
    try:
        deadline = time.monotonic() + 300
        while (
            await conn.fetchval(f"SELECT count(*) FROM {schema}.versions WHERE model = $1", MODEL)
            < n
        ):
            if time.monotonic() > deadline:
                raise SystemExit("mlcp did not register every run in 300 s")
            await asyncio.sleep(0.05)
        rows = await conn.fetch(
            f"SELECT run_id, created_at FROM {schema}.versions WHERE model = $1", MODEL
        )
    finally:
        await conn.close()
    done = {r["run_id"]: r["created_at"].timestamp() for r in rows}
    latencies = [(done[run] - sent[run]) * 1000 for run in sent]
    return Result(
        "mlcp", "register (RunFinished → version)", 1, latencies, max(done.values()) - start
    )


async def run(args: argparse.Namespace) -> list[Result]:
    unique = uuid.uuid4().hex[:8]
    schema, mlflow_schema, prefix = (
        f"registry_bench_{unique}",
        f"mlflow_bench_{unique}",
        f"b{unique}.",
    )
    port, mlflow_port = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="mlcp-bench-"))
    conn = await asyncpg.connect(DATABASE)
    await conn.execute(f"CREATE SCHEMA {mlflow_schema}")
    await conn.close()
    env = {
        **os.environ,
        "MLCP_KAFKA_BOOTSTRAP": KAFKA,
        "MLCP_DATABASE_URL": DATABASE,
        "MLCP_HTTP_PORT": str(port),
        "MLCP_DB_SCHEMA": schema,
        "MLCP_TOPIC_PREFIX": prefix,
        "MLCP_REGISTRY_BOOTSTRAP_TOKEN": TOKEN,
        "MLCP_LOG_LEVEL": "WARNING",
    }
    mlcp = start([sys.executable, "-m", "mlcp.registry"], tmp / "mlcp.log", env)
    # SQLAlchemy's default PostgreSQL driver is psycopg 3; MLflow is installed with psycopg2.
    store = DATABASE.replace("postgresql://", "postgresql+psycopg2://", 1)
    store += f"?options={quote(f'-csearch_path={mlflow_schema}')}"
    mlflow = start(
        [*MLFLOW, "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
         "--backend-store-uri", store, "--default-artifact-root", str(tmp / "artifacts"),
         "--no-serve-artifacts"],
        tmp / "mlflow.log", dict(os.environ),
    )  # fmt: skip
    results: list[Result] = []
    try:
        base, mbase = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{mlflow_port}"
        await wait_http(f"{base}/readyz", mlcp, "mlcp registry", 90)
        await wait_http(f"{mbase}/health", mlflow, "mlflow server", 300)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        n_reg, n_get, conc = args.registrations, args.lookups, args.concurrency
        limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)

        # --- registration ---------------------------------------------------------------------
        results.append(await mlcp_registrations(base, prefix, schema, n_reg))
        async with httpx.AsyncClient(base_url=mbase, limits=limits) as m:
            r = await m.post("/api/2.0/mlflow/registered-models/create", json={"name": MODEL})
            r.raise_for_status()
            counter = iter(range(10**9))

            async def mlflow_register() -> None:
                i = next(counter)
                resp = await m.post(
                    "/api/2.0/mlflow/model-versions/create",
                    json={"name": MODEL, "source": f"s3://bench-artifacts/run-{i}/model"},
                )
                assert resp.status_code == 200, resp.text

            lat, secs = await measure(mlflow_register, n_reg, 1)
            results.append(Result("mlflow", "register (create model version)", 1, lat, secs))

            # --- aliases ------------------------------------------------------------------------
            r = await m.post(
                "/api/2.0/mlflow/registered-models/alias",
                json={"name": MODEL, "alias": "production", "version": "1"},
            )
            r.raise_for_status()

            async def mlflow_alias() -> None:
                resp = await m.get(
                    "/api/2.0/mlflow/registered-models/alias",
                    params={"name": MODEL, "alias": "production"},
                )
                assert resp.status_code == 200, resp.text

            async with httpx.AsyncClient(base_url=base, headers=auth, limits=limits) as c:
                r = await c.post(f"/models/{MODEL}/aliases/production", json={"version": "1.0.0"})
                r.raise_for_status()
                etag = (await c.get(f"/models/{MODEL}/aliases/production")).headers["etag"]

                async def mlcp_alias() -> None:
                    resp = await c.get(f"/models/{MODEL}/aliases/production")
                    assert resp.status_code == 200, resp.text

                async def mlcp_alias_304() -> None:
                    resp = await c.get(
                        f"/models/{MODEL}/aliases/production", headers={"If-None-Match": etag}
                    )
                    assert resp.status_code == 304, resp.text

                for concurrency in (1, conc):
                    for system, label, call in (
                        ("mlcp", "alias lookup", mlcp_alias),
                        ("mlcp", "alias lookup (If-None-Match → 304)", mlcp_alias_304),
                        ("mlflow", "alias lookup", mlflow_alias),
                    ):
                        await measure(call, 20, concurrency)  # warm-up
                        lat, secs = await measure(call, n_get, concurrency)
                        results.append(Result(system, label, concurrency, lat, secs))
    finally:
        for proc in (mlcp, mlflow):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        conn = await asyncpg.connect(DATABASE)
        for name in (schema, mlflow_schema):
            await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        await conn.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (well under a minute)")
    parser.add_argument("--registrations", type=int, default=None)
    parser.add_argument("--lookups", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    args.registrations = args.registrations or (50 if args.quick else 300)
    args.lookups = args.lookups or (300 if args.quick else 3000)
    results = asyncio.run(run(args))

    header = ["system", "operation", "conc", "n", "req/s", "p50 ms", "p95 ms", "p99 ms"]
    rows = [header, *(r.row() for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) if j < 2 else cell.rjust(w)
                        for j, (cell, w) in enumerate(zip(row, widths, strict=True))))  # fmt: skip
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for conc in sorted({r.concurrency for r in results if "alias" in r.operation}):
        ours = next(r for r in results if r.operation == "alias lookup" and r.system == "mlcp"
                    and r.concurrency == conc)  # fmt: skip
        theirs = next(r for r in results if r.operation == "alias lookup"
                      and r.system == "mlflow" and r.concurrency == conc)  # fmt: skip
        ratio = ours.throughput / theirs.throughput
        verdict = "meets" if ratio >= 5 and ours.p99 < 10 else "misses"
        print(
            f"alias lookup, concurrency {conc}: mlcp {ratio:.1f}x MLflow's throughput, "
            f"p99 {ours.p99:.2f} ms — {verdict} the target (>= 5x, p99 < 10 ms)"
        )


if __name__ == "__main__":
    main()
