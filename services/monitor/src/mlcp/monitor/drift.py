"""Drift statistics of a live window against a version's reference profile (pure, vectorised).

A ``Layout`` turns a ``ReferenceProfile`` into numpy arrays once per version. Live feature values
are encoded into two matrices — numeric values (NaN = missing) and categorical codes (``-1`` =
missing, ``K`` = a category the profile does not list) — which are what a window stores and what
``evaluate_window`` tests:

* numeric: PSI on the profile's bins (values outside the edges count in the first / last bin)
  and the two-sample Kolmogorov-Smirnov test against the profile's sample (scipy's ``ks_2samp``);
* categorical: PSI and Pearson's chi-squared test on the profile's category frequencies.

PSI follows Evidently: empty shares are replaced by 0.0001 before ``Σ (a − e)·ln(a / e)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats  # type: ignore[import-untyped]  # no stubs in the lock

from mlcp.contracts import CategoricalProfile, NumericProfile, ReferenceProfile
from mlcp.policy.platform import DriftPolicy
from mlcp.profiles import category_key

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]

PSI_FLOOR = 1e-4
"""Share used for an empty bin in PSI (Evidently's value), so that ln(a / e) stays finite."""
MIN_ROWS = 10
"""Below this many non-missing values a feature's tests are skipped (too few to mean anything)."""


def psi(expected: FloatArray, actual: FloatArray) -> float:
    """Population stability index between two share vectors over the same bins."""
    e = np.where(expected <= 0, PSI_FLOOR, expected)
    a = np.where(actual <= 0, PSI_FLOOR, actual)
    return float(np.sum((a - e) * np.log(a / e)))


def sorted_bin_counts(values_sorted: FloatArray, edges: FloatArray) -> npt.NDArray[np.int64]:
    """``bin_counts`` of sorted values: one lookup per edge instead of one per value."""
    below = np.searchsorted(values_sorted, edges[1:-1], side="left")
    return np.diff(np.concatenate(([0], below, [values_sorted.size]))).astype(np.int64)


def bin_counts(values: FloatArray, edges: FloatArray) -> npt.NDArray[np.int64]:
    """Counts of ``values`` in the bins of ``edges``; out-of-range values go to the end bins.

    Bins are ``[e_i, e_i+1)`` like numpy's histogram (whose last bin is closed, which the
    clipping to the last bin reproduces).
    """
    index = np.searchsorted(edges[1:-1], values, side="right")
    return np.bincount(index, minlength=len(edges) - 1).astype(np.int64)


@dataclass(frozen=True)
class NumericRef:
    """One numeric feature of a profile, as arrays."""

    name: str
    edges: FloatArray
    proportions: FloatArray
    sample: FloatArray
    sample_values: FloatArray  # the sample's distinct values, sorted
    sample_cdf: FloatArray  # share of the sample ≤ each distinct value


def sample_ecdf(sample: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Distinct sorted values of a reference sample and its empirical CDF at them."""
    values, counts = np.unique(sample, return_counts=True)
    return values, np.cumsum(counts) / max(sample.size, 1)


def ks_statistic(ref: NumericRef, live_sorted: FloatArray) -> float:
    """Two-sample KS distance D between the reference sample and a sorted live window.

    Between two distinct reference values the reference CDF is flat, so the largest gap is at
    a reference value (live CDF ≤ it) or just before one (live CDF < it): 2·m lookups into
    the sorted window instead of scipy's search of every pooled value. Equal to scipy's D.
    """
    n = live_sorted.size
    live_le = np.searchsorted(live_sorted, ref.sample_values, "right") / n
    live_lt = np.searchsorted(live_sorted, ref.sample_values, "left") / n
    ref_before = np.concatenate(([0.0], ref.sample_cdf[:-1]))
    return float(max(np.abs(ref.sample_cdf - live_le).max(), np.abs(ref_before - live_lt).max()))


EXACT_KS_MAX_N = 10_000
"""scipy's ``ks_2samp(method='auto')`` switch: exact p-values up to this many values."""
EXACT_KS_CACHE = 100_000
"""Most (m, n, h) exact results kept (a few MB at most)."""
_EXACT_KS: dict[tuple[int, int, int], tuple[float, float]] = {}


def ks_test(ref: NumericRef, live_sorted: FloatArray) -> tuple[float, float]:
    """(D, p-value) exactly as ``scipy.stats.ks_2samp(sample, live)`` (method 'auto').

    D comes from the sorted window (no search of every pooled value). Small windows take
    scipy's exact p-value (memoised, see below); large ones Smirnov's asymptotic distribution
    (``kstwo``), which is what scipy's 'auto' uses for them too.
    """
    m, n = ref.sample.size, live_sorted.size
    d = ks_statistic(ref, live_sorted)
    if max(m, n) <= EXACT_KS_MAX_N:
        # scipy's exact p-value depends on (m, n, h) alone, h = round(D · lcm(m, n)) — the
        # integer scipy itself rounds D to. A stream of windows of one size against one sample
        # meets few distinct h, so each is computed once (by scipy, on these very data).
        lcm = m // math.gcd(m, n) * n
        h = round(d * lcm)
        cached = _EXACT_KS.get((m, n, h))
        if cached is None:
            result = stats.ks_2samp(ref.sample, live_sorted)
            cached = float(result.statistic), float(result.pvalue)
            if len(_EXACT_KS) < EXACT_KS_CACHE:
                _EXACT_KS[(m, n, h)] = cached
        return cached
    big, small = max(m, n), min(m, n)
    en = float(big) * small / (big + small)
    return d, float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))


@dataclass(frozen=True)
class CategoricalRef:
    """One categorical feature: categories, their shares, and the share of all others last."""

    name: str
    index: Mapping[str, int]
    proportions: FloatArray  # len(index) + 1: the last entry is 'other'


@dataclass(frozen=True)
class Chunk:
    """Encoded rows of a window as stored: ``rows`` × the layout's numeric features as float64
    bytes, ``rows`` × its categorical features as int32 codes."""

    rows: int
    numeric: bytes
    categorical: bytes


@dataclass(frozen=True)
class Encoded:
    """Live rows of one version encoded against its layout."""

    numeric: FloatArray  # (rows, numeric features), NaN = missing
    categorical: IntArray  # (rows, categorical features), -1 = missing, K = unlisted
    bad_values: int  # non-numeric values in numeric features (counted as missing)

    @property
    def rows(self) -> int:
        return int(self.numeric.shape[0])

    def missing_per_feature(self) -> npt.NDArray[np.int64]:
        """Missing values per feature, numeric features first."""
        return np.concatenate(
            [np.isnan(self.numeric).sum(axis=0), (self.categorical < 0).sum(axis=0)]
        ).astype(np.int64)

    def to_chunk(self) -> Chunk:
        """The rows as a window chunk (raw bytes of both matrices), for the traffic store."""
        return Chunk(self.rows, self.numeric.tobytes(), self.categorical.tobytes())

    @classmethod
    def from_chunks(cls, chunks: Sequence[Chunk], layout: Layout) -> Encoded:
        """Concatenate a window's stored chunks (in arrival order)."""
        nums = [
            np.frombuffer(c.numeric, dtype=np.float64).reshape(c.rows, len(layout.numeric))
            for c in chunks
        ]
        cats = [
            np.frombuffer(c.categorical, dtype=np.int32).reshape(c.rows, len(layout.categorical))
            for c in chunks
        ]
        empty = cls.empty(layout)
        return cls(
            np.concatenate([empty.numeric, *nums]),
            np.concatenate([empty.categorical, *cats]),
            0,
        )

    @classmethod
    def empty(cls, layout: Layout) -> Encoded:
        """No rows."""
        return cls(
            np.empty((0, len(layout.numeric)), np.float64),
            np.empty((0, len(layout.categorical)), np.int32),
            0,
        )

    def slice(self, start: int, stop: int) -> Encoded:
        """Rows ``start:stop``."""
        return Encoded(self.numeric[start:stop], self.categorical[start:stop], 0)

    def rows_with_missing(self) -> int:
        """Rows missing at least one profiled feature."""
        return int((np.isnan(self.numeric).any(axis=1) | (self.categorical < 0).any(axis=1)).sum())


class Layout:
    """The arrays of one reference profile; encodes live rows and tests windows against it."""

    def __init__(self, profile: ReferenceProfile) -> None:
        numeric: list[NumericRef] = []
        categorical: list[CategoricalRef] = []
        for name, feature in profile.features.items():
            if isinstance(feature, NumericProfile):
                if len(feature.bin_edges) < 2:
                    continue  # a feature with no reference values cannot be tested
                props = np.asarray(feature.bin_proportions, dtype=np.float64)
                sample = np.asarray(feature.sample, dtype=np.float64)
                values, cdf = sample_ecdf(sample)
                numeric.append(
                    NumericRef(
                        name=name,
                        edges=np.asarray(feature.bin_edges, dtype=np.float64),
                        proportions=props / props.sum(),
                        sample=sample,
                        sample_values=values,
                        sample_cdf=cdf,
                    )
                )
            elif isinstance(feature, CategoricalProfile) and feature.count > 0:
                names = list(feature.frequencies)
                props = np.asarray([*feature.frequencies.values(), feature.other], np.float64)
                categorical.append(
                    CategoricalRef(
                        name=name,
                        index={c: i for i, c in enumerate(names)},
                        proportions=props / props.sum(),
                    )
                )
        self.numeric = tuple(numeric)
        self.categorical = tuple(categorical)
        self.names = tuple([f.name for f in numeric] + [f.name for f in categorical])
        self._take = itemgetter(*[f.name for f in numeric]) if numeric else None

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> Encoded:
        """Encode the feature dicts of live predictions into the two matrices."""
        n = len(rows)
        num, bad = self._numeric_fast(rows)
        if num is None:
            num, bad = self._numeric_by_column(rows)
        cat = np.empty((n, len(self.categorical)), dtype=np.int32)
        for j, cref in enumerate(self.categorical):
            other = len(cref.index)
            index = cref.index
            cat[:, j] = [
                -1 if v is None else index.get(category_key(v), other)
                for v in (row.get(cref.name) for row in rows)
            ]
        # Contracts reject NaN/inf at decode; a huge value that overflows is treated as missing.
        num[~np.isfinite(num)] = np.nan
        return Encoded(num, cat, bad)

    def _numeric_fast(self, rows: Sequence[Mapping[str, Any]]) -> tuple[FloatArray | None, int]:
        """The numeric matrix in one C pass when every row has every numeric feature as a
        number (the usual traffic): ~7× cheaper than a column at a time. None otherwise."""
        k = len(self.numeric)
        if k == 0:
            return np.empty((len(rows), 0), dtype=np.float64), 0
        take = self._take
        assert take is not None
        try:
            values = map(take, rows) if k > 1 else ((take(row),) for row in rows)
            flat = np.fromiter(chain.from_iterable(values), np.float64, count=len(rows) * k)
        except (KeyError, TypeError, ValueError):  # a missing feature, None, a string…
            return None, 0
        return flat.reshape(len(rows), k), 0

    def _numeric_by_column(self, rows: Sequence[Mapping[str, Any]]) -> tuple[FloatArray, int]:
        num = np.empty((len(rows), len(self.numeric)), dtype=np.float64)
        bad = 0
        for j, ref in enumerate(self.numeric):
            column = [row.get(ref.name) for row in rows]
            try:
                num[:, j] = np.asarray(column, dtype=np.float64)
            except (TypeError, ValueError):
                num[:, j], col_bad = _numeric_slow(column)
                bad += col_bad
        return num, bad


def _numeric_slow(column: list[Any]) -> tuple[FloatArray, int]:
    out = np.full(len(column), np.nan)
    bad = 0
    for i, value in enumerate(column):
        if value is None:
            continue
        try:
            out[i] = float(value)
        except (TypeError, ValueError):
            bad += 1
    return out, bad


@dataclass(frozen=True)
class Test:
    """One drift test of one feature (mirrors the contract's FeatureDrift)."""

    name: str
    method: str  # psi | ks | chi2
    score: float  # PSI, or the p-value
    threshold: float
    drifted: bool
    statistic: float | None = None


@dataclass(frozen=True)
class DriftReport:
    """Every test of a window and the dataset-level verdict."""

    tests: tuple[Test, ...]
    rows: int
    share_drifted: float
    share_threshold: float
    detected: bool


def evaluate_window(layout: Layout, window: Encoded, policy: DriftPolicy) -> DriftReport:
    """Test every profiled feature of ``window``; drift when the share of drifted features
    reaches ``policy.share_of_features`` (a feature drifts when any of its tests does)."""
    tests: list[Test] = []
    # One sort of every column (NaN sort last) serves both PSI's bins and KS's CDF.
    # Transposed first so that each feature's values are contiguous for the lookups.
    ordered = np.sort(np.ascontiguousarray(window.numeric.T), axis=1)
    present = window.rows - np.isnan(window.numeric).sum(axis=0)
    for j, ref in enumerate(layout.numeric):
        x = ordered[j, : present[j]]
        if x.size < MIN_ROWS:
            continue
        limit = policy.features.get(ref.name, policy.psi)
        counts = sorted_bin_counts(x, ref.edges)
        score = psi(ref.proportions, counts / x.size)
        tests.append(Test(ref.name, "psi", score, limit, score >= limit))
        if ref.sample.size >= MIN_ROWS:
            d, p = ks_test(ref, x)
            p = _finite(p)
            tests.append(Test(ref.name, "ks", p, policy.ks_pvalue, p < policy.ks_pvalue, d))
    for j, cref in enumerate(layout.categorical):
        codes = window.categorical[:, j]
        codes = codes[codes >= 0]
        if codes.size < MIN_ROWS:
            continue
        limit = policy.features.get(cref.name, policy.psi)
        observed = np.bincount(codes, minlength=cref.proportions.size).astype(np.float64)
        score = psi(cref.proportions, observed / codes.size)
        tests.append(Test(cref.name, "psi", score, limit, score >= limit))
        chi2, p = chi_squared(cref.proportions, observed)
        tests.append(Test(cref.name, "chi2", p, policy.ks_pvalue, p < policy.ks_pvalue, chi2))
    features = {t.name for t in tests}
    drifted = {t.name for t in tests if t.drifted}
    share = len(drifted) / len(features) if features else 0.0
    return DriftReport(
        tests=tuple(tests),
        rows=window.rows,
        share_drifted=share,
        share_threshold=policy.share_of_features,
        detected=bool(features) and share >= policy.share_of_features,
    )


def chi_squared(expected_shares: FloatArray, observed: FloatArray) -> tuple[float, float]:
    """Pearson's chi-squared goodness of fit of ``observed`` counts to ``expected_shares``.

    Categories empty on both sides are dropped; a category the reference never saw gets the PSI
    floor as its share, so one unseen value is strong evidence rather than an infinite statistic.
    """
    keep = (expected_shares > 0) | (observed > 0)
    shares = np.where(expected_shares[keep] <= 0, PSI_FLOOR, expected_shares[keep])
    obs = observed[keep]
    if obs.size < 2:
        return 0.0, 1.0
    expected = shares / shares.sum() * obs.sum()
    result = stats.chisquare(obs, expected)
    return _finite(float(result.statistic)), _finite(float(result.pvalue))


def _finite(value: float) -> float:
    # Contracts carry finite, non-negative numbers only.
    if math.isnan(value):
        return 1.0
    return min(max(value, 0.0), 1e300)
