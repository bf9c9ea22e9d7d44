"""Build a ``ReferenceProfile`` from columns of training data.

Numeric features: up to ``BINS`` equal-frequency bins (PSI), 21 quantiles and a seeded uniform
sample (two-sample KS). Categorical and boolean features: the ``MAX_CATEGORIES`` most frequent
categories plus ``other``. The sample size shrinks with the number of features so that the
profile stays far below the 1 MiB event limit (RunFinished and ModelVersionRegistered both
carry it). Values are rounded to 6 significant digits on the wire.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcp.contracts.profile import (
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    Quantile,
    ReferenceProfile,
)
from mlcp.contracts.types import MAX_CATEGORIES, MAX_SAMPLE

BINS = 10
QUANTILES = tuple(i / 20 for i in range(21))
SAMPLE_BUDGET_VALUES = 6_000
"""Sample values across all features (about 20 bytes each on the wire)."""
CATEGORY_KEY_LENGTH = 256
"""Longest category name a profile carries (the contract's limit): longer values are cut, on
the trainer's side and the monitor's alike, so a long live value still meets its bin."""

Column = Sequence[Any] | npt.NDArray[Any]


def category_key(value: Any) -> str:
    """How a categorical value is named in a profile and looked up by the monitor: booleans as
    'true' / 'false', anything else as its string, cut at ``CATEGORY_KEY_LENGTH`` characters."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return str(value)[:CATEGORY_KEY_LENGTH]


def is_missing(value: Any) -> bool:
    """None and NaN are missing values (pandas' ``NA`` is turned into None by the caller)."""
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def is_numeric(column: Column) -> bool:
    """Whether a column is profiled as numeric: integers and floats (booleans, strings, mixed
    and object columns are categorical)."""
    return np.asarray(column).dtype.kind in "iuf"


def sample_size_for(features: int) -> int:
    """KS sample values per numeric feature for a profile of ``features`` columns."""
    return max(20, min(MAX_SAMPLE, SAMPLE_BUDGET_VALUES // max(features, 1)))


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _edges(values: npt.NDArray[np.float64]) -> list[float]:
    edges = sorted({_round(float(v)) for v in np.quantile(values, np.linspace(0, 1, BINS + 1))})
    if len(edges) < 2:
        # A constant feature: one bin around its value.
        v = edges[0] if edges else 0.0
        width = abs(v) * 1e-3 or 1.0
        edges = [v - width, v + width]
    return edges


def numeric_profile(values: npt.ArrayLike, *, sample_size: int, seed: int) -> NumericProfile:
    """Bins, quantiles, moments and a seeded sample of one numeric column (NaN and ±inf count
    as missing)."""
    clean = np.asarray(values, dtype=np.float64)
    finite = clean[np.isfinite(clean)]
    missing = int(clean.size - finite.size)
    if finite.size == 0:
        return NumericProfile(count=0, missing=missing)
    edges = _edges(finite)
    inner = np.clip(finite, edges[0], edges[-1])
    counts, _ = np.histogram(inner, bins=np.asarray(edges))
    proportions = [float(c) / finite.size for c in counts]
    rng = np.random.default_rng(seed)
    take = min(sample_size, finite.size)
    sample = rng.choice(finite, size=take, replace=False) if take else np.array([])
    quantiles = []
    last = -np.inf
    for q, value in zip(QUANTILES, np.quantile(finite, QUANTILES), strict=True):
        value = max(_round(float(value)), last)  # rounding must not make them decrease
        quantiles.append(Quantile(q=q, value=value))
        last = value
    return NumericProfile(
        count=int(finite.size),
        missing=missing,
        min=float(finite.min()),
        max=float(finite.max()),
        mean=float(finite.mean()),
        std=float(finite.std()),
        bin_edges=tuple(edges),
        bin_proportions=tuple(proportions),
        quantiles=tuple(quantiles),
        sample=tuple(_round(float(v)) for v in sample),
    )


def categorical_profile(values: Iterable[Any]) -> CategoricalProfile:
    """Category shares of one column: the ``MAX_CATEGORIES`` most frequent (ties: the first
    seen first), the rest in ``other``; None and NaN are missing."""
    counts: Counter[str] = Counter()
    missing = 0
    for value in values:
        if is_missing(value):
            missing += 1
        else:
            counts[category_key(value)] += 1
    total = counts.total()
    if total == 0:
        return CategoricalProfile(count=0, missing=missing)
    frequencies = {k: c / total for k, c in counts.most_common(MAX_CATEGORIES)}
    other = max(0.0, 1.0 - sum(frequencies.values()))
    return CategoricalProfile(count=total, missing=missing, frequencies=frequencies, other=other)


def reference_profile(columns: Mapping[str, Column], *, seed: int = 0) -> ReferenceProfile:
    """The profile of every column (name → values, all of one length): numeric columns get
    bins, quantiles and a sample (seeded ``seed + position``), the others category shares."""
    sample_size = sample_size_for(len(columns))
    features: dict[str, FeatureProfile] = {}
    rows = 0
    for i, (name, column) in enumerate(columns.items()):
        rows = max(rows, len(column))
        if is_numeric(column):
            features[str(name)] = numeric_profile(column, sample_size=sample_size, seed=seed + i)
        else:
            features[str(name)] = categorical_profile(column)
    return ReferenceProfile(rows=rows, features=features)
