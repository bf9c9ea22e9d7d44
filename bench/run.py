"""`make bench`: run every benchmark against the real Kafka and PostgreSQL, print ONE table.

Each benchmark runs as its own process, one after the other (the machine is small and noisy:
never two at once), as ``python bench/<script>.py [--quick] --json <tmp>``; its output streams
here with a ``[script mm:ss]`` prefix. The headline rows they write (bench/common.py's
``Measure``) are put in the order of issue 9's table and written, with the environment they
were measured in, to ``bench/results/latest.{json,md}`` and ``bench/results/<quick|full>.*``
(``partial.*`` for a run of some of them, ``--only``).

A missed target is reported, not a failure. A benchmark that crashes, times out or reports
none of its rows gets an error row (the others' rows still show) and makes the exit code 1.

    uv run python bench/run.py [--quick] [--only bus_floor,rollback] [--timeout S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Measure, bus, credentials_hint, render_markdown, servers

RESULTS = ROOT / "bench" / "results"
QUICK_BUDGET_S = 300.0  # issue 9: the quick suite runs in under 5 minutes


@dataclass(frozen=True)
class Bench:
    script: str
    rows: tuple[tuple[str, str], ...]  # (key, the row of issue 9's table), in its order


BENCHES = (
    Bench(
        "bus_floor.py",
        (
            ("bus_floor", "raw bus floor: aiokafka produce → consume of the same records"),
            ("bus_floor_scram", "bus floor, SASL/SCRAM-SHA-512 vs plaintext: produce → consume"),
            ("bus_round_trip_scram", "bus round trip p50, SASL/SCRAM-SHA-512 vs plaintext"),
            ("bus_floor_tls", "bus floor, SASL_SSL (SCRAM + TLS) vs plaintext: produce → consume"),
            ("bus_round_trip_tls", "bus round trip p50, SASL_SSL (SCRAM + TLS) vs plaintext"),
        ),
    ),
    Bench("trainer_trigger.py", (("trigger_latency", "DataArrived → TrainingRequested p95"),)),
    Bench(
        "gatekeeper_dag.py",
        (("gate_latency", "candidate registered → GatePassed p95 (4 automatic stages)"),),
    ),
    Bench("rollback.py", (("rollback", "ModelDegraded observed → ModelRolledBack p95"),)),
    Bench(
        "threshold_to_canary.py",
        (
            (
                "threshold_to_canary",
                "DataArrived crossing the threshold → ModelPromoted(canary), "
                "excluding training time",
            ),
        ),
    ),
    Bench("monitor_ingest.py", (("ingest", "PredictionLogged ingest events/s (20 features)"),)),
    Bench("monitor_drift.py", (("drift", "drift on 100k × 20"),)),
    Bench(
        "registry_alias.py",
        (
            ("alias_lookup", "alias resolution req/s and p99"),
            ("version_registration", "version registration req/s"),
        ),
    ),
    Bench("notifier_fanout.py", (("notification_fanout", "notification fan-out to a local sink"),)),
    Bench(
        "client_overhead.py",
        (("client_overhead", "client overhead per request (route + log), p99"),),
    ),
)
TARGETS = {  # issue 9's targets, shown on an error row too
    "rollback": "p95 ≤ 250 ms",
    "threshold_to_canary": "≤ 1000 ms plus training",
    "ingest": "≥ 0.5 × raw consume",
    "drift": "≥ 20× Evidently",
    "alias_lookup": "≥ 5× MLflow",
    "client_overhead": "p99 ≤ 50 µs",
}


@dataclass
class Outcome:
    bench: Bench
    seconds: float
    exit_code: int | None  # None: timed out and killed
    rows: list[Measure]
    error: str | None  # why it has no (or not all) rows
    log: Path


def say(line: str) -> None:
    print(line, flush=True)


def load_rows(path: Path) -> list[Measure]:
    """The rows a benchmark wrote; fields this runner does not know are dropped, not fatal."""
    known = {f.name for f in fields(Measure)}
    raw = json.loads(path.read_text())
    return [Measure(**{k: v for k, v in item.items() if k in known}) for item in raw]


async def stop_group(proc: asyncio.subprocess.Process) -> None:
    """Stop the benchmark's process group: SIGTERM first (the benchmark cancels itself and still
    stops its services and drops its schemas and topics), SIGKILL for what is left after 30 s.
    After a normal exit this only catches a service the benchmark failed to stop."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


async def run_one(bench: Bench, index: int, total: int, args: argparse.Namespace) -> Outcome:
    work = Path(tempfile.mkdtemp(prefix=f"mlcp-bench-{Path(bench.script).stem}-"))
    out, log = work / "rows.json", work / "output.log"
    command = [sys.executable, str(ROOT / "bench" / bench.script), "--json", str(out)]
    if args.quick:
        command.insert(2, "--quick")
    say(f"==> [{index}/{total}] {bench.script} {'--quick' if args.quick else ''} (log: {log})")
    started = time.monotonic()
    # A session of its own: on a timeout the whole tree (the services it started) is killed.
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        limit=1 << 20,  # long lines (a JSON dump) must not break the stream
    )
    tail: list[str] = []

    async def stream() -> None:
        assert proc.stdout is not None
        with log.open("w") as sink:
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                sink.write(line + "\n")
                tail[:] = [*tail[-19:], line]
                elapsed = int(time.monotonic() - started)
                say(f"  [{Path(bench.script).stem} {elapsed // 60}:{elapsed % 60:02d}] {line}")

    exit_code: int | None
    try:
        await asyncio.wait_for(asyncio.gather(stream(), proc.wait()), args.timeout)
        exit_code = proc.returncode
    except TimeoutError:
        exit_code = None
    finally:  # also on Ctrl-C: its own session does not get the SIGINT
        await stop_group(proc)
    seconds = time.monotonic() - started
    rows: list[Measure] = []
    error = None
    if exit_code is None:
        error = f"timed out after {args.timeout:.0f} s"
    elif exit_code != 0:
        last = next((line for line in reversed(tail) if line.strip()), "").strip()
        if "unrecognized arguments: --json" in last:
            last = "does not take --json yet (not on bench/common.py's format)"
        error = f"exit {exit_code}: {last[:160]}"
    if out.is_file():
        try:
            rows = load_rows(out)
        except (ValueError, TypeError) as bad:
            error = error or f"unreadable --json output: {bad}"
    elif error is None:
        error = "wrote no --json rows"
    verdict = "ok" if error is None else f"FAILED ({error})"
    say(f"<== {bench.script}: {verdict} in {seconds:.0f} s, {len(rows)} row(s)")
    return Outcome(bench, seconds, exit_code, rows, error, log)


def table_rows(outcomes: list[Outcome]) -> list[Measure]:
    """Rows in the issue's order; an error row for each expected row a benchmark did not give."""
    rows: list[Measure] = []
    for outcome in outcomes:
        by_key = {r.key: r for r in outcome.rows}
        for key, label in outcome.bench.rows:
            if key in by_key:
                rows.append(by_key.pop(key))  # its own label: a quick size may differ
                continue
            reason = outcome.error or f"did not report the row {key!r}"
            rows.append(
                Measure(
                    key=key,
                    measure=label,
                    mlcp=math.nan,
                    unit="",
                    better="higher",
                    workload=f"{outcome.bench.script}: see {outcome.log}",
                    target=TARGETS.get(key),
                    error=reason.replace("|", "/"),
                )
            )
        rows.extend(by_key.values())  # rows the table does not name yet: shown, not hidden
    return rows


def git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def preflight() -> dict[str, str]:
    """Fail early, with the fix, when Kafka or PostgreSQL is not there or the bus refuses a
    principal the benchmarks act as; the servers' versions."""
    import asyncpg

    from mlcp.devstack import KAFKA_VERSION
    from mlcp.policy.acl import load_policy
    from mlcp.runtime.kafka import BusAccessError, check_access
    from mlcp.runtime.settings import ConfigurationError

    here = servers()
    start = (
        "Start the dev stack first: `uv run mlcp-dev up` (make bench does it), or point "
        "MLCP_KAFKA_BOOTSTRAP / MLCP_DATABASE_URL at servers of your own (bench/common.py says "
        "how to give their credentials)."
        if here.dev_stack
        else "Start them, or unset MLCP_KAFKA_BOOTSTRAP / MLCP_DATABASE_URL to use the dev stack."
    )
    # Every principal the benchmarks act as (each service, pipeline, inference, operator,
    # admin) must get in: a wrong password found here costs seconds, not a crashed benchmark.
    principals = list(load_policy().principals) if here.authenticated else ["admin"]
    for principal in principals:
        try:
            problem = await check_access(bus(principal), timeout_s=10)
        except (BusAccessError, ConfigurationError) as refused:
            raise SystemExit(
                f"Kafka at {here.bootstrap} does not let the benchmarks in as {principal!r}: "
                f"{refused}\nFix: {credentials_hint(here)}."
            ) from None
        if problem is not None:
            raise SystemExit(f"Kafka ({here.bootstrap}) is not reachable ({problem}).\n{start}")
    try:
        conn = await asyncio.wait_for(asyncpg.connect(here.database_url), 15)
        try:
            postgres = str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
    except Exception as down:
        raise SystemExit(
            f"PostgreSQL is not reachable ({type(down).__name__}: {down}).\n{start}"
        ) from down
    return {
        "kafka": f"{KAFKA_VERSION} (mlcp dev stack, KRaft)" if here.dev_stack else "unknown",
        "kafka_bootstrap": here.bootstrap,
        "kafka_security": (
            f"{here.protocol}, SCRAM-SHA-512, ACLs from acls.yaml"
            if here.authenticated
            else here.protocol
        ),
        "postgresql": postgres,
    }


def environment(args: argparse.Namespace, server_info: dict[str, str]) -> dict[str, Any]:
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "git_commit": commit + (" (uncommitted changes)" if dirty else ""),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        **server_info,
    }


def markdown(env: dict[str, Any], rows: list[Measure], outcomes: list[Outcome]) -> str:
    lines = [
        f"# mlcp benchmarks ({env['mode']}, {env['date']})",
        "",
        *(f"- {k}: {v}" for k, v in env.items() if k not in ("benchmarks",)),
        "",
        render_markdown(rows),
        "",
        "Ratio: how many times better mlcp is than the anchor or floor measured in the same run "
        "(throughputs mlcp / anchor, latencies anchor / mlcp); against a raw-Kafka floor it is "
        "a fraction (the floor is a ceiling mlcp cannot beat). The bus-security rows compare "
        "the secured bus with plaintext: the fraction of the plaintext figure it achieves.",
        "",
        "## Workloads",
        *(f"- `{r.key}`: {r.workload}" for r in rows),
        "",
        "## Runs",
        *(
            f"- {o.bench.script}: {'ok' if o.error is None else o.error}, {o.seconds:.0f} s"
            for o in outcomes
        ),
        "",
    ]
    return "\n".join(lines)


def write(
    env: dict[str, Any], rows: list[Measure], outcomes: list[Outcome], *, partial: bool
) -> list[Path]:
    def plain(row: Measure) -> dict[str, Any]:
        data = asdict(row)
        data["mlcp"] = None if math.isnan(row.mlcp) else row.mlcp
        return data

    env = {
        **env,
        "benchmarks": [
            {"script": o.bench.script, "seconds": round(o.seconds, 1), "exit_code": o.exit_code}
            for o in outcomes
        ],
    }
    document = json.dumps({"environment": env, "rows": [plain(r) for r in rows]}, indent=2)
    text = markdown(env, rows, outcomes)
    RESULTS.mkdir(parents=True, exist_ok=True)
    written = []
    # A run of some benchmarks (--only) must not replace the last whole table.
    for stem in ("partial",) if partial else ("latest", env["mode"]):
        (RESULTS / f"{stem}.json").write_text(document + "\n")
        (RESULTS / f"{stem}.md").write_text(text)
        written += [RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"]
    return written


async def main(args: argparse.Namespace) -> int:
    wanted = {w.strip() for w in args.only.split(",")} if args.only else None
    benches = [
        b
        for b in BENCHES
        if wanted is None
        or Path(b.script).stem in wanted
        or any(key in wanted for key, _ in b.rows)
    ]
    if not benches:
        raise SystemExit(f"--only {args.only}: no such benchmark (scripts or row keys)")
    server_info = await preflight()
    env = environment(args, server_info)
    say(f"mlcp benchmarks ({env['mode']}): {len(benches)} scripts, Kafka {servers().bootstrap}")
    started = time.monotonic()
    outcomes = [await run_one(b, i, len(benches), args) for i, b in enumerate(benches, 1)]
    total = time.monotonic() - started
    env["total_seconds"] = round(total, 1)
    rows = table_rows(outcomes)
    written = write(env, rows, outcomes, partial=wanted is not None)
    say("")
    say(render_markdown(rows))
    missed = [r.key for r in rows if r.met is False]
    crashed = [o.bench.script for o in outcomes if o.error is not None]
    say("")
    say(f"{len(rows)} rows in {total / 60:.1f} min; targets missed: {', '.join(missed) or 'none'}")
    if args.quick and total > QUICK_BUDGET_S and wanted is None:
        say(f"note: the quick suite took longer than its {QUICK_BUDGET_S:.0f} s budget")
    if crashed:
        say(f"benchmarks that failed (error rows above): {', '.join(crashed)}")
    say("written: " + ", ".join(str(p.relative_to(ROOT)) for p in written))
    return 1 if crashed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, < 5 minutes in all")
    parser.add_argument("--only", help="comma-separated script stems or row keys to run")
    parser.add_argument(
        "--timeout", type=float, default=None, help="per benchmark (default 900 s quick, 3600 s)"
    )
    arguments = parser.parse_args()
    if arguments.timeout is None:
        arguments.timeout = 900.0 if arguments.quick else 3600.0
    try:
        sys.exit(asyncio.run(main(arguments)))
    except KeyboardInterrupt:
        sys.exit("interrupted: the running benchmark was stopped, nothing written")
