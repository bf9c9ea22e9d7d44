"""The reference profile of a training frame: pandas columns handed to ``mlcp.profiles``.

The profile itself (bins, quantiles, sample, top categories, the category key) is built by
``mlcp.profiles``, the one builder the monitor, the tests and the benchmarks use too; this
module only turns a DataFrame into plain columns: numeric ones as float arrays (NaN missing),
the others (booleans included) as Python objects with pandas' missing values as None.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from mlcp import profiles
from mlcp.contracts.profile import ReferenceProfile


def is_numeric(series: Any) -> bool:
    """Whether a column is profiled as numeric (booleans are categorical)."""
    return bool(pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))


def _column(series: Any) -> Any:
    if is_numeric(series):
        return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return series.to_numpy(dtype=object, na_value=None)


def reference_profile(frame: Any, *, seed: int) -> ReferenceProfile:
    """The profile of every column of ``frame`` (the training features)."""
    columns = {str(name): _column(frame[name]) for name in frame.columns}
    return profiles.reference_profile(columns, seed=seed)
