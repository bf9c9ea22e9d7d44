"""Drift of one 100,000-row × 20-feature window: mlcp against Evidently's DataDriftPreset.

Workload: a reference of 20,000 rows per feature (normal(0, 1)) is profiled by the builder the
trainer ships profiles with (``mlcp.profiles``: 10 quantile bins + a 300-value sample per
feature, the sample shrinking with the number of features); the live window is
100,000 rows × 20 features, half of them shifted by 0.25 σ.

* mlcp — ``evaluate_window``: PSI on the profile's bins AND two-sample KS against the profile's
  sample for every feature, then the dataset rule (drift when ≥ 50 % of features drift).
* Evidently 0.7 ``DataDriftPreset`` on the same columns, the same reference (the profile's
  samples — what mlcp's KS compares with) and the same current rows; once with
  ``num_method="ks"`` (p < 0.05) and once with ``num_method="psi"`` (≥ 0.2), ``drift_share=0.5``.
  Evidently runs one method per column per report, so "the same tests" is the two reports.
  It runs in its own process from the ``bench/anchors`` uv project (never the services' env).

Only the computation is timed (``evaluate_window`` on the encoded window; ``Report.run`` on
ready ``Dataset``s); medians over the repetitions. Cross-checks: every KS statistic and p-value
equals ``scipy.stats.ks_2samp`` and every KS p-value and verdict equals Evidently's; PSI equals
a direct numpy computation on the profile bins. Evidently's PSI bins differently (Sturges bins of
reference + current) so its PSI values differ; the verdict agreement is shown.

    uv run python bench/monitor_drift.py [--quick] [--json PATH]

--quick: 30,000 rows, mlcp ×5, Evidently's KS report ×1 (compared with mlcp's PSI + KS: the
conservative side). Full: 100,000 rows, mlcp ×10, Evidently KS ×3 + PSI ×3.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats  # type: ignore[import-untyped]

from mlcp.monitor.drift import Encoded, Layout, evaluate_window
from mlcp.policy.platform import DriftPolicy
from mlcp.profiles import reference_profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

FEATURES = 20
ROWS = 100_000
QUICK_ROWS = 30_000  # Evidently alone takes ~10-30 s on 100k rows here
NAMES = [f"f{i:02d}" for i in range(FEATURES)]
ANCHORS = Path(__file__).resolve().parent / "anchors"

EVIDENTLY = r"""
import json, sys, time
import numpy as np, pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

data = np.load(sys.argv[1])
methods = json.loads(sys.argv[2])  # {"ks": reps, "psi": reps}
names = [f"f{i:02d}" for i in range(data["current"].shape[1])]
definition = DataDefinition(numerical_columns=names)
def dataset(matrix):
    return Dataset.from_pandas(pd.DataFrame(matrix, columns=names), data_definition=definition)
reference, current = dataset(data["reference"]), dataset(data["current"])
thresholds = {"ks": 0.05, "psi": 0.2}
out = {}
for method, reps in methods.items():
    seconds, values = [], None
    for _ in range(reps):
        preset = DataDriftPreset(
            num_method=method, num_threshold=thresholds[method], drift_share=0.5
        )
        report = Report([preset])
        started = time.perf_counter()
        result = report.run(current, reference)
        seconds.append(time.perf_counter() - started)
        values = result.dict()["metrics"]
    names_of = {m["metric_name"].split("(")[0]: m for m in values}
    count = names_of["DriftedColumnsCount"]["value"]
    scores = {
        m["config"]["column"]: m["value"]
        for m in values
        if m["metric_name"].startswith("ValueDrift")
    }
    out[method] = {"seconds": seconds, "share": count["share"], "scores": scores}
import evidently
out["version"] = evidently.__version__
print("EVIDENTLY " + json.dumps(out))
"""


def data(seed: int, rows: int) -> tuple[Layout, Encoded, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    reference = {name: rng.normal(0, 1, 20_000) for name in NAMES}
    layout = Layout(reference_profile(reference))
    shifts = np.array([0.25 if i % 2 else 0.0 for i in range(FEATURES)])
    live = rng.normal(0, 1, (rows, FEATURES)) + shifts
    # The window as the monitor stores it (encoding is ingest's work, not the drift test's).
    window = Encoded(live.copy(), np.empty((rows, 0), np.int32), 0)
    return layout, window, live


def run_evidently(
    layout: Layout, live: np.ndarray[Any, Any], reps: dict[str, int]
) -> dict[str, Any] | None:
    """Evidently in the anchors project; None (and why, printed) if it cannot run."""
    sample = np.column_stack([ref.sample for ref in layout.numeric])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "window.npz"
        np.savez(path, reference=sample, current=live)
        command = ["uv", "run", "--quiet", "--project", str(ANCHORS), "python", "-c", EVIDENTLY]
        try:
            done = subprocess.run(
                [*command, str(path), json.dumps(reps)],
                capture_output=True,
                text=True,
                timeout=1800,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"Evidently did not run: {exc}")
            return None
    for line in done.stdout.splitlines():
        if line.startswith("EVIDENTLY "):
            result: dict[str, Any] = json.loads(line.removeprefix("EVIDENTLY "))
            return result
    print(f"Evidently did not run (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    args = parser.parse_args()
    rows = QUICK_ROWS if args.quick else ROWS
    mlcp_reps = 5 if args.quick else 10
    evidently_reps = {"ks": 1} if args.quick else {"ks": 3, "psi": 3}
    layout, window, live = data(seed=1, rows=rows)
    policy = DriftPolicy()

    report = evaluate_window(layout, window, policy)  # warm-up (imports, caches)
    mlcp_s, scipy_s = [], []
    for _ in range(mlcp_reps):
        started = time.perf_counter()
        report = evaluate_window(layout, window, policy)
        mlcp_s.append(time.perf_counter() - started)
    for _ in range(min(mlcp_reps, 3)):
        started = time.perf_counter()
        scipy_ks = [stats.ks_2samp(ref.sample, live[:, j]) for j, ref in enumerate(layout.numeric)]
        scipy_s.append(time.perf_counter() - started)

    ks = {t.name: t for t in report.tests if t.method == "ks"}
    psi = {t.name: t for t in report.tests if t.method == "psi"}
    same_scipy = all(
        abs(ks[ref.name].statistic - r.statistic) <= 1e-12  # type: ignore[operator]
        and abs(ks[ref.name].score - r.pvalue) <= 1e-9 * max(r.pvalue, 1e-300)
        for ref, r in zip(layout.numeric, scipy_ks, strict=True)
    )
    psi_ok = True
    for j, ref in enumerate(layout.numeric):
        clipped = np.clip(live[:, j], ref.edges[0], ref.edges[-1])
        shares = np.histogram(clipped, ref.edges)[0] / rows
        e = np.where(ref.proportions == 0, 1e-4, ref.proportions)
        a = np.where(shares == 0, 1e-4, shares)
        direct = float(np.sum((a - e) * np.log(a / e)))
        psi_ok &= abs(psi[ref.name].score - direct) <= 1e-12 + 1e-9 * abs(direct)

    evidently = run_evidently(layout, live, evidently_reps)
    mlcp_ms = statistics.median(mlcp_s) * 1000
    print(f"\nmonitor drift — {rows:,} rows × {FEATURES} numeric features; mlcp ×{mlcp_reps}")
    print(f"{'measure':<58}{'median':>10}{'min':>10}{'max':>10}")
    print("-" * 88)

    def row(label: str, seconds: list[float]) -> None:
        ms = [s * 1000 for s in seconds]
        print(f"{label:<58}{statistics.median(ms):>10.1f}{min(ms):>10.1f}{max(ms):>10.1f}")

    row("mlcp evaluate_window: PSI + KS × 20 + share rule (ms)", mlcp_s)
    row("scipy.stats.ks_2samp × 20 alone (ms)", scipy_s)
    anchor_ms: float | None = None
    if evidently is not None:
        for method in evidently_reps:
            reps = evidently_reps[method]
            label = f"Evidently {evidently['version']} DataDriftPreset({method}) ×{reps} (ms)"
            row(label, evidently[method]["seconds"])
        anchor_ms = sum(statistics.median(evidently[m]["seconds"]) * 1000 for m in evidently_reps)
    print("-" * 88)
    drifted = sorted({t.name for t in report.tests if t.drifted})
    print(
        f"mlcp: {len(drifted)}/{FEATURES} features drifted (share {report.share_drifted:.2f}, "
        f"dataset drift {report.detected})"
    )
    print(f"KS statistic and p-value equal to scipy.stats.ks_2samp: {same_scipy}")
    print(f"PSI equal to a direct numpy computation on the profile bins: {psi_ok}")
    extra: dict[str, float] = {"scipy_ks_ms": statistics.median(scipy_s) * 1000}
    if evidently is not None:
        ev_ks = evidently["ks"]["scores"]
        same_p = all(abs(ks[n].score - ev_ks[n]) <= 1e-9 * max(ev_ks[n], 1e-300) for n in NAMES)
        same_verdicts = sum(ks[n].drifted == (ev_ks[n] <= policy.ks_pvalue) for n in NAMES)
        print(f"KS p-values equal to Evidently's (rel 1e-9): {same_p}")
        print(f"KS verdicts equal to Evidently's: {same_verdicts}/{FEATURES}")
        ks_share = sum(ks[n].drifted for n in NAMES) / FEATURES
        print(f"dataset share by KS: mlcp {ks_share:.2f}, Evidently {evidently['ks']['share']:.2f}")
        extra["ks_verdicts_equal"] = float(same_verdicts)
        if "psi" in evidently:
            ev_psi = evidently["psi"]["scores"]
            agree = sum(psi[n].drifted == (ev_psi[n] >= policy.psi) for n in NAMES)
            print(
                f"PSI verdicts equal to Evidently's: {agree}/{FEATURES} (its bins differ: Sturges "
                "on reference + current, not the profile's quantile bins)"
            )
            extra["psi_verdicts_equal"] = float(agree)
        extra["evidently_ks_ms"] = statistics.median(evidently["ks"]["seconds"]) * 1000
    else:
        print("Evidently comparison: NOT RUN (see above)")
    tests = "KS report" if args.quick else "KS + PSI reports"
    ratio = anchor_ms / mlcp_ms if anchor_ms else None
    common.finish(
        [
            common.measure(
                "drift",
                "drift on 100k × 20" if rows == ROWS else f"drift on {rows // 1000}k × 20 (quick)",
                mlcp_ms,
                "ms",
                "lower",
                f"{rows:,} rows × {FEATURES} features vs a profile (10 bins + samples); "
                f"mlcp PSI + KS + share rule median of {mlcp_reps}; Evidently {tests} "
                f"(median of {max(evidently_reps.values())} each), computation only",
                anchor=anchor_ms,
                anchor_name=f"Evidently DataDriftPreset ({tests})",
                target="≥ 20× Evidently",
                met=None if ratio is None else ratio >= 20,
                extra=extra,
            )
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
