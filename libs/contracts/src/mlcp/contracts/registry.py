"""Events of the model registry: versions, promotions and rollbacks."""

from typing import Annotated, ClassVar, Self

import semver
from pydantic import Field, model_validator

from mlcp.contracts import topics
from mlcp.contracts.base import EventData
from mlcp.contracts.common import (
    ArtifactRef,
    Baseline,
    DatasetRef,
    FeatureSchema,
    check_unique_features,
)
from mlcp.contracts.profile import ReferenceProfile
from mlcp.contracts.types import (
    MAX_DATASETS,
    AliasName,
    BumpKind,
    FeatureName,
    Metrics,
    ModelName,
    Params,
    Percent,
    Principal,
    PromotionCause,
    RollbackCause,
    SemVer,
    ShortToken,
    Text,
    Token,
)


def check_bump(previous: str, version: str, bump: str) -> None:
    """Raise ValueError unless ``version`` follows ``previous`` by a ``bump`` increment."""
    prev, new = semver.Version.parse(previous), semver.Version.parse(version)
    if new <= prev:
        raise ValueError(f"version {version} is not greater than previous_version {previous}")
    ok = {
        "major": new.major > prev.major,
        "minor": new.major == prev.major and new.minor > prev.minor,
        "patch": (new.major, new.minor) == (prev.major, prev.minor) and new.patch > prev.patch,
    }[bump]
    if not ok:
        raise ValueError(f"{previous} → {version} is not a {bump} bump")


class ModelVersionRegistered(EventData):
    """A candidate model version entered the registry.

    Emitted by the registry for each RunFinished, with the SemVer it assigned: feature schema
    changed → major, training code or parameters changed → minor, data only → patch. Starts the
    gatekeeper's approval DAG; gives the monitor the version's reference profile. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.MODEL_REGISTERED

    model: ModelName
    version: SemVer
    run_id: Token
    """RunFinished.run_id the version was registered from."""
    previous_version: SemVer | None = None
    """Latest version registered before this one; null for the model's first version."""
    bump: BumpKind | None = None
    """Increment from previous_version; null exactly when previous_version is null."""
    metrics: Metrics
    params: Params
    baseline: Baseline | None = None
    """Production version scored on the same holdout (from RunFinished), for the baseline gate."""
    artifact: ArtifactRef
    reference_profile: ReferenceProfile
    feature_schema: FeatureSchema
    label: FeatureName | None = None
    datasets: Annotated[
        tuple[DatasetRef, ...], Field(min_length=1, max_length=MAX_DATASETS, fail_fast=True)
    ]
    code_version: ShortToken | None = None

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        check_unique_features(self.feature_schema)
        if (self.previous_version is None) != (self.bump is None):
            raise ValueError("bump and previous_version must be both set or both null")
        if self.previous_version is not None and self.bump is not None:
            check_bump(self.previous_version, self.version, self.bump)
        return self


class ModelPromoted(EventData):
    """A version now serves behind an alias.

    Emitted by the registry: to ``canary`` after GatePassed (cause ``gate_passed``), to
    ``production`` after CanaryHealthy (``canary_healthy``), or by an operator (``manual``).
    Inference services and the monitor follow it. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.MODEL_PROMOTED

    model: ModelName
    version: SemVer
    alias: AliasName
    traffic_percent: Percent
    """Share of traffic the alias receives, 0-100 (canary e.g. 10, production 100)."""
    previous_version: SemVer | None = None
    """Version that held the alias before; the rollback target for production."""
    cause: PromotionCause
    actor: Principal | None = None
    """Who promoted, for manual promotions."""


class ModelRolledBack(EventData):
    """A version was taken out of an alias.

    Emitted by the registry after ModelDegraded (cause ``degraded``) or by an operator
    (``manual``). ``to_version`` is the version that now holds the alias, or null when a canary
    is simply removed. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.MODEL_ROLLED_BACK

    model: ModelName
    alias: AliasName
    from_version: SemVer
    to_version: SemVer | None
    cause: RollbackCause
    reason: Text | None = None
    """Why, in words (e.g. the degradation evidence summarised)."""
    actor: Principal | None = None
    """Who rolled back, for manual rollbacks."""

    @model_validator(mode="after")
    def _moves(self) -> Self:
        if self.to_version == self.from_version:
            raise ValueError("to_version equals from_version")
        return self
