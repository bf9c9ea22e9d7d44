"""Build a ``ReferenceProfile`` from columns of data, the way a trainer profiles its training set.

The trainer owns the profiles shipped with versions; this builder exists so that tests, the
benchmarks and users replaying their own data can make profiles the monitor understands.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mlcp.contracts import CategoricalProfile, NumericProfile, ReferenceProfile
from mlcp.monitor.drift import category_key


def numeric_profile(
    values: npt.ArrayLike, *, bins: int = 10, sample: int = 1000, seed: int = 0
) -> NumericProfile:
    """Quantile bins (like Evidently's PSI), proportions and a uniform sample of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        edges = np.array([x.min() - 0.5, x.max() + 0.5])
    index = np.searchsorted(edges[1:-1], x, side="right")
    counts = np.bincount(index, minlength=edges.size - 1)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(x, size=min(sample, x.size), replace=False)
    return NumericProfile(
        count=int(x.size),
        min=float(x.min()),
        max=float(x.max()),
        mean=float(x.mean()),
        std=float(x.std()),
        bin_edges=tuple(float(e) for e in edges),
        bin_proportions=tuple(float(c) for c in counts / x.size),
        sample=tuple(float(v) for v in chosen),
    )


def categorical_profile(values: Sequence[Any]) -> CategoricalProfile:
    """Category shares of ``values`` (None = missing)."""
    present = [category_key(v) for v in values if v is not None]
    counts = Counter(present)
    total = len(present)
    return CategoricalProfile(
        count=total,
        missing=len(values) - total,
        frequencies={k: c / total for k, c in counts.items()},
    )


def profile_from_columns(columns: Mapping[str, Sequence[Any] | npt.ArrayLike]) -> ReferenceProfile:
    """Profile every column: numeric arrays get bins, anything else category shares."""
    features: dict[str, NumericProfile | CategoricalProfile] = {}
    rows = 0
    for name, column in columns.items():
        array = np.asarray(column)
        rows = max(rows, len(array))
        if array.dtype.kind in "fiu":
            features[name] = numeric_profile(array)
        else:
            features[name] = categorical_profile(list(column))  # type: ignore[arg-type]
    return ReferenceProfile(rows=rows, features=features)
