"""Events of the trainer: retrain requests and training runs."""

from typing import Annotated, ClassVar, Self

from pydantic import Field, model_validator

from mlcp.contracts import topics
from mlcp.contracts.base import EventData
from mlcp.contracts.common import (
    ArtifactRef,
    Baseline,
    DatasetRef,
    Environment,
    FeatureSchema,
    check_unique_features,
)
from mlcp.contracts.profile import ReferenceProfile
from mlcp.contracts.types import (
    MAX_DATASETS,
    MAX_TRIGGERS,
    Count,
    DatasetName,
    ErrorText,
    FeatureName,
    Metrics,
    ModelName,
    NonNegativeFloat,
    Params,
    Principal,
    ShortText,
    ShortToken,
    Slug,
    Token,
    TrainingReason,
)


class TrainingRequested(EventData):
    """A model should be retrained.

    Emitted by the trainer when a model's new rows cross its threshold (``data_threshold``),
    after DriftDetected outside the cool-down (``drift``), or on a person's request (``manual``).
    Consumed by the trainer's workers, which run the training. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.TRAINING_REQUESTED

    model: ModelName
    reason: TrainingReason
    dataset: DatasetName | None = None
    """Dataset the model trains on."""
    rows_since_last_run: Count | None = None
    """New rows in the ledger since the model's last run (required for data_threshold)."""
    threshold: Count | None = None
    """The model's retrain threshold in rows (required for data_threshold)."""
    trigger_event_ids: Annotated[
        tuple[Token, ...], Field(max_length=MAX_TRIGGERS, fail_fast=True)
    ] = ()
    """CloudEvents ids of the events that led to this request (DataArrived, DriftDetected)."""
    requested_by: Principal | None = None
    """Who asked, for manual requests."""

    @model_validator(mode="after")
    def _threshold_facts(self) -> Self:
        if self.reason == "data_threshold" and (
            self.rows_since_last_run is None or self.threshold is None
        ):
            raise ValueError("reason 'data_threshold' needs rows_since_last_run and threshold")
        return self


class RunStarted(EventData):
    """A training run began.

    Emitted by a trainer worker when it starts a run for a TrainingRequested. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.RUN_STARTED

    run_id: Token
    model: ModelName
    reason: TrainingReason


class RunFinished(EventData):
    """A training run succeeded and produced a candidate model.

    Emitted by a trainer worker with everything needed to reproduce and judge the candidate.
    The registry registers it as a new version (ModelVersionRegistered). Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.RUN_FINISHED

    run_id: Token
    model: ModelName
    reason: TrainingReason
    params: Params
    """Training parameters (hyper-parameters, seed)."""
    metrics: Metrics
    """Holdout metrics of the candidate: accuracy, latency_p95_ms …"""
    baseline: Baseline | None
    """Current production version scored on the same holdout; null when there is none."""
    datasets: Annotated[
        tuple[DatasetRef, ...], Field(min_length=1, max_length=MAX_DATASETS, fail_fast=True)
    ]
    """Training data lineage."""
    feature_schema: FeatureSchema
    label: FeatureName | None = None
    """Name of the label column."""
    artifact: ArtifactRef
    reference_profile: ReferenceProfile
    """Training-data distribution of every feature, for drift detection."""
    code_version: ShortToken
    """Version of the training code: git commit, or package version of the entrypoint."""
    entrypoint: ShortText | None = None
    """The training callable, 'module:function'."""
    environment: Environment
    duration_s: NonNegativeFloat
    """Wall-clock duration of the run in seconds."""

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        check_unique_features(self.feature_schema)
        names = {spec.name for spec in self.feature_schema}
        unknown = sorted(set(self.reference_profile.features) - names)
        if unknown:
            raise ValueError(f"reference_profile has features not in feature_schema: {unknown[:5]}")
        return self


class RunFailed(EventData):
    """A training run failed.

    Emitted by a trainer worker when a run raises or its output is unusable; the notifier
    alerts on it. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.RUN_FAILED

    run_id: Token
    model: ModelName
    reason: TrainingReason
    stage: Slug
    """Where it failed, e.g. 'load_data', 'train', 'evaluate', 'profile', 'save_artifact'."""
    error: ErrorText
    """Error message (truncated traceback), without secrets."""
    error_type: ShortToken | None = None
    """Exception class name, e.g. 'ValueError'."""
