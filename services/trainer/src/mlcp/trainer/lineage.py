"""A run's lineage, and reproducing it: ``python -m mlcp.trainer.lineage RUN_ID [--reproduce]``.

The lineage is everything the tracking tables hold about a run (request, batches with their
uri, rows, digests and re-announcements, params, metrics, target, artifact, code version,
environment). ``--reproduce`` trains again
from exactly those batches (digests verified), entrypoint, params and seed, in this process, and
compares the holdout quality metrics with the recorded ones (latency is measured, not compared).
Reads ``MLCP_DATABASE_URL`` / ``MLCP_DB_SCHEMA`` like the service; exit 1 when the run is
unknown or the reproduction differs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import tempfile
from typing import Any

import asyncpg

from mlcp.policy.target import DEFAULT_TARGET, Target
from mlcp.runtime.settings import ConfigurationError, Settings, load_settings
from mlcp.trainer import run_store
from mlcp.trainer.training import BatchSpec, JobSpec, run_job

NOT_COMPARED = ("latency_p50_ms", "latency_p95_ms")


def reproduce_command(run_id: str) -> str:
    """The shell command that re-trains ``run_id`` and checks its metrics."""
    return f"python -m mlcp.trainer.lineage {shlex.quote(run_id)} --reproduce"


async def load_lineage(settings: Settings, run_id: str) -> dict[str, Any] | None:
    """The recorded lineage of a run (None when unknown)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f"SET search_path TO {settings.db_schema or 'trainer'}")
        found = await run_store.run_lineage(conn, run_id)
    finally:
        await conn.close()
    if found is not None:
        found["reproduce"] = reproduce_command(run_id)
    return found


def job_from_lineage(lineage: dict[str, Any], artifact_root: str) -> JobSpec:
    """The JobSpec that trains a recorded run again."""
    return JobSpec(
        run_id=f"{lineage['run_id']}-reproduced",
        model=lineage["model"],
        entrypoint=lineage["entrypoint"],
        params=lineage["params"],
        label=lineage["label"],
        features=[f["name"] for f in lineage["feature_schema"]],
        batches=tuple(
            BatchSpec(
                b["dataset"],
                b["batch_id"],
                b["uri"],
                b["sha256"],
                b["rows"],
                b["completeness"] if b["completeness"] is not None else 1.0,
                b["format"],
            )
            for b in lineage["batches"]
        ),
        artifact_root=artifact_root,
        # A run recorded before targets were kept: the default target.
        target=Target.model_validate(lineage["target"])
        if lineage.get("target")
        else DEFAULT_TARGET,
    )


def compare(recorded: dict[str, float], again: dict[str, float]) -> dict[str, Any]:
    """Metric by metric: recorded, reproduced, equal."""
    return {
        name: {"recorded": value, "reproduced": again.get(name), "equal": again.get(name) == value}
        for name, value in sorted(recorded.items())
        if name not in NOT_COMPARED
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry: print the lineage (JSON); with --reproduce, train again and compare."""
    parser = argparse.ArgumentParser(prog="python -m mlcp.trainer.lineage", description=__doc__)
    parser.add_argument("run_id")
    parser.add_argument("--reproduce", action="store_true")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"mlcp: {exc}", file=sys.stderr)
        return 2
    lineage = asyncio.run(load_lineage(settings, args.run_id))
    if lineage is None:
        print(f"mlcp: no run {args.run_id!r}", file=sys.stderr)
        return 1
    if not args.reproduce:
        print(json.dumps(lineage, indent=2, default=str))
        return 0
    if lineage["status"] != "finished":
        print(f"mlcp: run {args.run_id} is {lineage['status']}, not finished", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="mlcp-reproduce-") as root:
        result = run_job(job_from_lineage(lineage, root))
    report = compare(lineage["metrics"], result["metrics"])
    print(json.dumps({"run_id": args.run_id, "metrics": report}, indent=2))
    return 0 if all(m["equal"] for m in report.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
