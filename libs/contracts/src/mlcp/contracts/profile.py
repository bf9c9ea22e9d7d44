"""Reference profiles: the training-data distribution a version is monitored against.

Numeric features carry histogram bins for PSI, plus a sample (and optional quantiles) for the
two-sample Kolmogorov-Smirnov test. Categorical features carry category frequencies for PSI
and chi-squared. Live values below the first bin edge count in the first bin and values above
the last edge in the last bin, so every live value falls in a bin.
"""

import itertools
import math
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from mlcp.contracts.base import Contract
from mlcp.contracts.types import (
    MAX_BINS,
    MAX_CATEGORIES,
    MAX_FEATURES,
    MAX_QUANTILES,
    MAX_SAMPLE,
    Count,
    FeatureName,
    FiniteFloat,
    Ratio,
)

PROPORTION_TOLERANCE = 0.01
"""How far from 1.0 the proportions of a profile may sum (producers may round them)."""


def _check_sum(total: float, what: str) -> None:
    if not math.isclose(total, 1.0, abs_tol=PROPORTION_TOLERANCE):
        raise ValueError(f"{what} sum to {total:.4f}, expected 1 (± {PROPORTION_TOLERANCE})")


class Quantile(Contract):
    """The value below which a fraction ``q`` of the reference values lie."""

    q: Ratio
    value: FiniteFloat


class NumericProfile(Contract):
    """Distribution of a numeric feature."""

    kind: Literal["numeric"] = "numeric"
    count: Count
    """Non-missing values profiled."""
    missing: Count = 0
    """Missing (null) values seen."""
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None
    mean: FiniteFloat | None = None
    std: FiniteFloat | None = None
    bin_edges: Annotated[
        tuple[FiniteFloat, ...], Field(max_length=MAX_BINS + 1, fail_fast=True)
    ] = ()
    """Strictly increasing histogram edges (bins + 1 of them); empty only when count is 0."""
    bin_proportions: Annotated[tuple[Ratio, ...], Field(max_length=MAX_BINS, fail_fast=True)] = ()
    """Share of reference values in each bin; one per bin, summing to 1."""
    quantiles: Annotated[tuple[Quantile, ...], Field(max_length=MAX_QUANTILES, fail_fast=True)] = ()
    """Optional quantiles, increasing in q and value."""
    sample: Annotated[tuple[FiniteFloat, ...], Field(max_length=MAX_SAMPLE, fail_fast=True)] = ()
    """A uniform random sample of reference values, for the two-sample KS test."""

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        edges, props = self.bin_edges, self.bin_proportions
        if self.count > 0 and len(edges) < 2:
            raise ValueError("a numeric profile with values needs at least 2 bin_edges")
        if edges and len(edges) < 2:
            raise ValueError("bin_edges needs at least 2 edges")
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError("bin_edges must be strictly increasing")
        if len(props) != max(len(edges) - 1, 0):
            raise ValueError(
                f"bin_proportions has {len(props)} entries for {len(edges)} bin_edges "
                f"(expected {max(len(edges) - 1, 0)})"
            )
        if self.count > 0:
            _check_sum(math.fsum(props), "bin_proportions")
        qs = self.quantiles
        if any(b.q <= a.q or b.value < a.value for a, b in itertools.pairwise(qs)):
            raise ValueError("quantiles must increase in q and must not decrease in value")
        if self.min is not None and self.max is not None and self.max < self.min:
            raise ValueError("max is below min")
        if self.std is not None and self.std < 0:
            raise ValueError("std must be ≥ 0")
        return self


class CategoricalProfile(Contract):
    """Distribution of a categorical (or boolean) feature; categories are the values' strings
    (booleans as 'true' / 'false')."""

    kind: Literal["categorical"] = "categorical"
    count: Count
    """Non-missing values profiled."""
    missing: Count = 0
    """Missing (null) values seen."""
    frequencies: Annotated[
        dict[Annotated[str, Field(max_length=256)], Ratio], Field(max_length=MAX_CATEGORIES)
    ] = Field(default_factory=dict)
    """Share of reference values per category (the most frequent ones)."""
    other: Ratio = 0.0
    """Share of values in categories not listed in ``frequencies``."""

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.count > 0:
            _check_sum(math.fsum(self.frequencies.values()) + self.other, "frequencies + other")
        return self


FeatureProfile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]


class ReferenceProfile(Contract):
    """Per-feature reference distributions, computed by the trainer on the training data."""

    rows: Count
    """Rows the profile was computed from."""
    features: Annotated[dict[FeatureName, FeatureProfile], Field(max_length=MAX_FEATURES)]
    """Feature name → its distribution."""
