"""The result format every benchmark shares, so that `make bench` (bench/run.py) can print one table.

Each benchmark script under bench/ keeps its own detailed table and, in addition:

* accepts ``--quick`` (small sizes; the whole quick suite must stay under 5 minutes) and
  ``--json PATH`` (write its headline rows there as a JSON list of :class:`Measure`);
* builds its headline rows with :func:`measure` and hands them to :func:`finish`, which prints
  them and writes the JSON file when asked.

Ratios are "how many times better mlcp is than the anchor or floor": for throughputs
mlcp / anchor, for latencies anchor / mlcp. A floor (raw aiokafka) is a ceiling mlcp cannot beat,
so its ratio is a fraction (ingest ≥ 0.5 × raw consume).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Measure:
    key: str  # stable id, e.g. "alias_lookup"
    measure: str  # the row label of issue 9's table
    mlcp: float
    unit: str  # "ms", "events/s", "req/s", ...
    better: Better  # which direction is better for this quantity
    workload: str  # sizes, repetitions, concurrency: enough to reproduce it
    anchor: float | None = None  # the same quantity for the anchor or floor, same run
    anchor_name: str | None = None  # "MLflow 3.x on the same PostgreSQL", "raw aiokafka", ...
    ratio: float | None = None  # mlcp is this many times better (see module doc)
    target: str | None = None  # human text, e.g. "≥ 5× MLflow and p99 < 10 ms"
    met: bool | None = None  # whether the target is met in this run (None: no target)
    extra: dict[str, float] | None = None  # secondary figures (p50, p99, ...)


def ratio(mlcp: float, anchor: float | None, better: Better) -> float | None:
    if anchor is None or anchor <= 0 or mlcp <= 0:
        return None
    return mlcp / anchor if better == "higher" else anchor / mlcp


def measure(
    key: str,
    label: str,
    mlcp: float,
    unit: str,
    better: Better,
    workload: str,
    *,
    anchor: float | None = None,
    anchor_name: str | None = None,
    target: str | None = None,
    met: bool | None = None,
    extra: dict[str, float] | None = None,
) -> Measure:
    return Measure(
        key=key,
        measure=label,
        mlcp=mlcp,
        unit=unit,
        better=better,
        workload=workload,
        anchor=anchor,
        anchor_name=anchor_name,
        ratio=ratio(mlcp, anchor, better),
        target=target,
        met=met,
        extra=extra,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Inclusive percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return ordered[-1] if q >= 100 else ordered[0] if q <= 0 else cuts[round(q) - 1]


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes (part of a < 5 min run)")
    parser.add_argument("--json", type=Path, default=None, help="write the headline rows here")


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def render_markdown(rows: Sequence[Measure]) -> str:
    lines = [
        "| measure | mlcp | anchor or floor (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        anchor = f"{_fmt(r.anchor)} {r.unit} ({r.anchor_name})" if r.anchor is not None else "—"
        ratio_text = f"{r.ratio:.2f}×" if r.ratio is not None else "—"
        met = "—" if r.met is None else "yes" if r.met else "**no**"
        lines.append(
            f"| {r.measure} | {_fmt(r.mlcp)} {r.unit} | {anchor} | {ratio_text} "
            f"| {r.target or '—'} | {met} |"
        )
    return "\n".join(lines)


def finish(rows: Sequence[Measure], json_path: Path | None) -> None:
    """Print the headline rows; write them as JSON when the runner asked for it."""
    print()
    print(render_markdown(rows))
    for r in rows:
        print(f"  {r.key}: {r.workload}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
