"""Drift of one 100,000-row × 20-feature window against a reference profile (in-process).

Times mlcp's window test (PSI on the profile bins + two-sample KS for every feature, then the
dataset-level share rule) and cross-checks every KS result against ``scipy.stats.ks_2samp``
(same statistic and p-value, same verdict) on the same data, also timing that scipy loop.

Evidently's DataDriftPreset is not installed in this workspace, so the comparison the issue
names (≥ 20× faster than Evidently, same verdicts) is NOT run here; the table says so.

    uv run python bench/monitor_drift.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy import stats  # type: ignore[import-untyped]

from mlcp.monitor.drift import Layout, evaluate_window
from mlcp.monitor.reference import profile_from_columns
from mlcp.runtime.platform import DriftPolicy

FEATURES = 20


def data(rows: int, seed: int) -> tuple[Layout, list[dict[str, float]], np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = {f"f{i:02d}": rng.normal(0, 1, 20_000) for i in range(FEATURES)}
    layout = Layout(profile_from_columns(reference))
    # Half the features shift: a realistic mix of drifted and stable columns.
    shifts = np.array([0.25 if i % 2 else 0.0 for i in range(FEATURES)])
    live = rng.normal(0, 1, (rows, FEATURES)) + shifts
    names = [f"f{i:02d}" for i in range(FEATURES)]
    rows_as_dicts = [dict(zip(names, row.tolist(), strict=True)) for row in live]
    return layout, rows_as_dicts, live


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions instead of 10")
    args = parser.parse_args()
    rows, reps = 100_000, 3 if args.quick else 10
    layout, dict_rows, matrix = data(rows, seed=1)
    policy = DriftPolicy()

    t = time.perf_counter()
    window = layout.encode(dict_rows)
    encode_s = time.perf_counter() - t

    mlcp_s, scipy_s = [], []
    report = evaluate_window(layout, window, policy)
    for _ in range(reps):
        t = time.perf_counter()
        report = evaluate_window(layout, window, policy)
        mlcp_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        reference = [
            stats.ks_2samp(ref.sample, matrix[:, j]) for j, ref in enumerate(layout.numeric)
        ]
        scipy_s.append(time.perf_counter() - t)

    ks = [test for test in report.tests if test.method == "ks"]
    same_d = all(
        abs(test.statistic - ref.statistic) <= 1e-12  # type: ignore[operator]
        for test, ref in zip(ks, reference, strict=True)
    )
    same_p = all(
        abs(test.score - ref.pvalue) <= 1e-9 * max(ref.pvalue, 1e-300)
        for test, ref in zip(ks, reference, strict=True)
    )
    same_verdicts = all(
        test.drifted == bool(ref.pvalue < policy.ks_pvalue)
        for test, ref in zip(ks, reference, strict=True)
    )
    drifted = sorted({t.name for t in report.tests if t.drifted})
    # PSI cross-check: numpy's histogram on the profile edges (outliers clipped into the end
    # bins) and the PSI formula written out, against mlcp's value for every feature.
    psi_ok = True
    for j, ref in enumerate(layout.numeric):
        clipped = np.clip(matrix[:, j], ref.edges[0], ref.edges[-1])
        shares = np.histogram(clipped, ref.edges)[0] / rows
        e = np.where(ref.proportions == 0, 1e-4, ref.proportions)
        a = np.where(shares == 0, 1e-4, shares)
        direct = float(np.sum((a - e) * np.log(a / e)))
        mine = next(t.score for t in report.tests if t.name == ref.name and t.method == "psi")
        psi_ok &= abs(mine - direct) <= 1e-12 + 1e-9 * abs(direct)

    print(f"\nmonitor drift — {rows:,} rows × {FEATURES} numeric features, {reps} repetitions\n")
    print(f"{'measure':<52}{'median':>12}{'p95':>12}")
    print("-" * 76)
    print(f"{'encode rows → window matrix (s, once)':<52}{encode_s:>12.3f}{'':>12}")
    print(
        f"{'mlcp evaluate_window: PSI + KS × 20 + share (s)':<52}"
        f"{statistics.median(mlcp_s):>12.3f}{percentile(mlcp_s, 95):>12.3f}"
    )
    print(
        f"{'scipy.stats.ks_2samp × 20 alone (s)':<52}"
        f"{statistics.median(scipy_s):>12.3f}{percentile(scipy_s, 95):>12.3f}"
    )
    print(f"{'Evidently DataDriftPreset (s)':<52}{'not run':>12}{'':>12}")
    print("-" * 76)
    speedup = statistics.median(scipy_s) / statistics.median(mlcp_s)
    print(f"mlcp (PSI + KS) vs scipy KS alone: {speedup:.1f}× faster")
    print(f"KS statistic equal to scipy (1e-12): {same_d}; p-value equal (rel 1e-9): {same_p}")
    print(f"same per-feature KS verdicts as scipy: {same_verdicts}")
    print(f"PSI equal to a direct numpy.histogram computation: {psi_ok}")
    print(
        f"drifted features: {len(drifted)}/{FEATURES} "
        f"(share {report.share_drifted:.2f}, dataset drift: {report.detected})"
    )
    print("Evidently comparison: NOT DONE (evidently is not installed in this workspace)")


if __name__ == "__main__":
    main()
