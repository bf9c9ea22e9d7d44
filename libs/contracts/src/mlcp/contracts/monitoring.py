"""Events of the monitor: drift, degradation and canary health."""

from typing import Annotated, ClassVar, Self

from pydantic import Field, model_validator

from mlcp.contracts import topics
from mlcp.contracts.aliases import CANARY
from mlcp.contracts.base import Contract, EventData
from mlcp.contracts.common import Evidence, Window
from mlcp.contracts.types import (
    MAX_EVIDENCE,
    MAX_FEATURES,
    AliasName,
    DriftMethod,
    FeatureName,
    ModelName,
    NonNegativeFloat,
    Ratio,
    SemVer,
)


class FeatureDrift(Contract):
    """The drift test of one feature against the version's reference profile.

    ``score`` is the PSI for ``psi`` (drifted when score > threshold) and the p-value for
    ``ks`` and ``chi2`` (drifted when score < threshold).
    """

    name: FeatureName
    method: DriftMethod
    score: NonNegativeFloat
    threshold: NonNegativeFloat
    drifted: bool
    statistic: NonNegativeFloat | None = None
    """The test statistic behind a p-value (KS D, chi-squared), if any."""


class DriftDetected(EventData):
    """Live traffic of a version drifted from its training data.

    Emitted by the monitor when the share of drifted features in a window reaches the model's
    ``share_of_features`` threshold; the trainer then requests a retrain (reason ``drift``) and
    the notifier alerts. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.DRIFT_DETECTED

    model: ModelName
    version: SemVer
    alias: AliasName | None = None
    """Alias whose traffic was analysed (usually 'production')."""
    features: Annotated[
        tuple[FeatureDrift, ...], Field(min_length=1, max_length=2 * MAX_FEATURES, fail_fast=True)
    ]
    """Every test run in the window (drifted or not); one per (feature, method)."""
    window: Window
    share_drifted: Ratio
    """Share of distinct features with at least one drifted test."""
    share_threshold: Ratio | None = None
    """The model's configured share_of_features threshold."""

    @model_validator(mode="after")
    def _unique_tests(self) -> Self:
        keys = [(f.name, f.method) for f in self.features]
        if len(set(keys)) != len(keys):
            raise ValueError("features has duplicate (name, method) tests")
        return self


EvidenceList = Annotated[
    tuple[Evidence, ...], Field(min_length=1, max_length=MAX_EVIDENCE, fail_fast=True)
]


class ModelDegraded(EventData):
    """A canary, or a production version inside its rollback window, crossed a rollout limit.

    Emitted by the monitor when error rate, p95 latency or live accuracy pass the rollout's
    ``degrade_if`` limits; the registry then rolls the alias back. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.MODEL_DEGRADED

    model: ModelName
    version: SemVer
    alias: AliasName
    evidence: EvidenceList
    """The crossed limits (each ``observed operator threshold`` as in the degrade_if config,
    satisfied = true) and optionally the other measurements."""
    window: Window
    baseline_version: SemVer | None = None
    """Version compared against (production, for a canary), if any."""


class CanaryHealthy(EventData):
    """A canary baked for its whole window without crossing any limit.

    Emitted by the monitor when the bake criteria (minimum predictions / duration) are met with
    every degradation limit respected; the registry then promotes it to production.
    Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.CANARY_HEALTHY

    model: ModelName
    version: SemVer
    alias: AliasName = CANARY
    window: Window
    evidence: Annotated[tuple[Evidence, ...], Field(max_length=MAX_EVIDENCE, fail_fast=True)] = ()
    """The measurements against each limit."""
    baseline_version: SemVer | None = None
    """Production version compared against, if any."""
