"""The reference profile of a training set — built once, here, for everyone.

The trainer ships this profile with every version it registers; the monitor tests live traffic
against it; tests and benchmarks build theirs with the same function, so they exercise the
profile production builds. ``category_key`` is the one way a categorical value is named, on both
sides: a live value is counted in the bin of the reference value it equals.

Pure: numpy and the contracts only (no pandas: the trainer hands columns over as arrays).
"""

from mlcp.profiles.builder import (
    BINS,
    CATEGORY_KEY_LENGTH,
    QUANTILES,
    SAMPLE_BUDGET_VALUES,
    categorical_profile,
    category_key,
    is_missing,
    is_numeric,
    numeric_profile,
    reference_profile,
    sample_size_for,
)

__all__ = [
    "BINS",
    "CATEGORY_KEY_LENGTH",
    "QUANTILES",
    "SAMPLE_BUDGET_VALUES",
    "categorical_profile",
    "category_key",
    "is_missing",
    "is_numeric",
    "numeric_profile",
    "reference_profile",
    "sample_size_for",
]
