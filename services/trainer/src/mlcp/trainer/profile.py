"""The reference profile of the training data that the monitor tests live traffic against.

Numeric features: up to 10 equal-frequency bins (PSI), 21 quantiles and a seeded uniform sample
(two-sample KS). Categorical and boolean features: the 200 most frequent categories plus
``other``. The sample size shrinks with the number of features so that the profile stays far
below the 1 MiB event limit (RunFinished and ModelVersionRegistered both carry it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

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


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def is_numeric(series: Any) -> bool:
    """Whether a column is profiled as numeric (booleans are categorical)."""
    return bool(pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))


def _edges(values: np.ndarray[Any, Any]) -> list[float]:
    edges = sorted({_round(float(v)) for v in np.quantile(values, np.linspace(0, 1, BINS + 1))})
    if len(edges) < 2:
        # A constant feature: one bin around its value.
        v = edges[0] if edges else 0.0
        width = abs(v) * 1e-3 or 1.0
        edges = [v - width, v + width]
    return edges


def numeric_profile(series: Any, *, sample_size: int, seed: int) -> NumericProfile:
    """Bins, quantiles, moments and a sample of one numeric column."""
    clean = pd.to_numeric(series, errors="coerce").astype(float)
    finite = clean[np.isfinite(clean)].to_numpy()
    missing = int(len(clean) - len(finite))
    if len(finite) == 0:
        return NumericProfile(count=0, missing=missing)
    edges = _edges(finite)
    inner = np.clip(finite, edges[0], edges[-1])
    counts, _ = np.histogram(inner, bins=np.asarray(edges))
    proportions = [float(c) / len(finite) for c in counts]
    rng = np.random.default_rng(seed)
    take = min(sample_size, len(finite))
    sample = rng.choice(finite, size=take, replace=False) if take else np.array([])
    qvalues = np.quantile(finite, QUANTILES)
    quantiles = []
    last = -np.inf
    for q, value in zip(QUANTILES, qvalues, strict=True):
        value = max(_round(float(value)), last)  # rounding must not make them decrease
        quantiles.append(Quantile(q=q, value=value))
        last = value
    return NumericProfile(
        count=len(finite),
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


def category_key(value: Any) -> str:
    """How a categorical value is named in a profile (booleans as 'true' / 'false')."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return str(value)[:256]


def categorical_profile(series: Any) -> CategoricalProfile:
    """Category frequencies of one column (the most frequent ones, the rest in ``other``)."""
    present = series.dropna()
    missing = int(len(series) - len(present))
    if len(present) == 0:
        return CategoricalProfile(count=0, missing=missing)
    counts = present.map(category_key).value_counts()
    top = counts.iloc[:MAX_CATEGORIES]
    total = float(len(present))
    frequencies = {str(k): float(v) / total for k, v in top.items()}
    other = max(0.0, 1.0 - sum(frequencies.values()))
    return CategoricalProfile(
        count=len(present), missing=missing, frequencies=frequencies, other=other
    )


def reference_profile(frame: Any, *, seed: int) -> ReferenceProfile:
    """The profile of every column of ``frame`` (the training features)."""
    columns = list(frame.columns)
    sample_size = max(20, min(MAX_SAMPLE, SAMPLE_BUDGET_VALUES // max(len(columns), 1)))
    features: dict[str, FeatureProfile] = {}
    for i, name in enumerate(columns):
        series = frame[name]
        if is_numeric(series):
            features[str(name)] = numeric_profile(series, sample_size=sample_size, seed=seed + i)
        else:
            features[str(name)] = categorical_profile(series)
    return ReferenceProfile(rows=len(frame), features=features)
