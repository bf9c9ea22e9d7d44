"""Value objects shared by several events: artifacts, datasets, schemas, evidence, windows."""

import hashlib
import operator
from collections.abc import Callable, Iterable
from typing import Annotated, Self

from pydantic import Field, model_validator

from mlcp.contracts.base import Contract
from mlcp.contracts.types import (
    MAX_BATCH_IDS,
    MAX_FEATURES,
    MAX_PACKAGES,
    Count,
    DatasetName,
    FeatureName,
    FiniteFloat,
    MetricName,
    Metrics,
    Operator,
    PackageName,
    Ratio,
    SemVer,
    Sha256Hex,
    ShortText,
    ShortToken,
    Token,
    Uri,
    UtcDatetime,
)

# The comparison operators of gate requirements and degradation limits, shared with the runtime.
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


class FeatureSpec(Contract):
    """One input column of a model."""

    name: FeatureName
    """Column name, as in the training data and in PredictionLogged.features."""
    dtype: ShortToken
    """Data type as the trainer saw it (numpy/pandas name: 'float64', 'int64', 'bool', 'object',
    'category', 'datetime64[ns]' …). A change of any name or dtype is a major version bump."""


FeatureSchema = Annotated[
    tuple[FeatureSpec, ...], Field(min_length=1, max_length=MAX_FEATURES, fail_fast=True)
]
"""The ordered input columns of a model; names are unique."""


def check_unique_features(schema: tuple[FeatureSpec, ...]) -> None:
    """Raise ValueError if two columns of ``schema`` share a name."""
    names = [spec.name for spec in schema]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"feature_schema has duplicate feature names: {duplicates[:5]}")


class ArtifactRef(Contract):
    """A stored model artifact; consumers verify ``sha256`` before loading it."""

    uri: Uri
    """Where the artifact is stored (file://…, s3://…)."""
    sha256: Sha256Hex
    """Digest of the artifact file's bytes."""
    format: ShortToken
    """Serialisation format: 'skops', 'joblib', 'pickle', 'onnx' …"""
    size_bytes: Count | None = None
    """File size, if known."""


FINGERPRINT_RECIPE = (
    "sha256 over the batches' DataArrived.sha256 values in ledger order, each written as its "
    "64 lowercase hex characters followed by a newline (\\n), encoded as ASCII: "
    "sha256(''.join(f'{h}\\n' for h in batch_sha256s).encode())."
)


class BatchRef(Contract):
    """One batch a run was trained on, as the trainer's ledger accepted it."""

    batch_id: Token
    """DataArrived.batch_id under which the batch was first announced."""
    uri: Uri
    rows: Count
    """Rows of the batch (DataArrived.rows)."""
    sha256: Annotated[
        Sha256Hex,
        Field(description="Digest of the batch file's bytes (DataArrived.sha256)."),
    ]
    duplicates: Count = 0
    """How often the same content (same dataset and sha256) was announced again before the run,
    under this or another batch id; the ledger counted it once."""


class DatasetRef(Contract):
    """The exact data a run was trained on: which batches of which dataset."""

    dataset: DatasetName
    batch_ids: Annotated[
        tuple[Token, ...], Field(min_length=1, max_length=MAX_BATCH_IDS, fail_fast=True)
    ]
    """DataArrived.batch_id of every batch used, in ledger order."""
    sha256: Annotated[
        Sha256Hex,
        Field(
            description="Fingerprint of these batches (the dataset digest): " + FINGERPRINT_RECIPE
        ),
    ]
    rows: Count | None = None
    """Total rows of these batches."""
    completeness: Ratio | None = None
    """Row-weighted completeness of these batches (input of the data_quality gate)."""
    batches: Annotated[tuple[BatchRef, ...], Field(max_length=MAX_BATCH_IDS)] = ()
    """Every batch used, in ledger order (the same as ``batch_ids``), with its uri, rows and
    digest; ``sha256`` is their fingerprint. Empty from producers that predate it."""

    @model_validator(mode="after")
    def _batches_agree(self) -> Self:
        if not self.batches:
            return self
        if tuple(b.batch_id for b in self.batches) != self.batch_ids:
            raise ValueError("batches must list batch_ids, in the same order")
        if self.fingerprint(b.sha256 for b in self.batches) != self.sha256:
            raise ValueError("sha256 is not the fingerprint of the batches' sha256 values")
        if self.rows is not None and self.rows != sum(b.rows for b in self.batches):
            raise ValueError("rows is not the sum of the batches' rows")
        return self

    @staticmethod
    def fingerprint(batch_sha256s: Iterable[str]) -> str:
        """The dataset digest of batches with these DataArrived digests, in ledger order."""
        digest = hashlib.sha256()
        for value in batch_sha256s:
            digest.update(f"{value}\n".encode())
        return digest.hexdigest()


class Baseline(Contract):
    """The current production version scored on the challenger's holdout set."""

    version: SemVer
    metrics: Metrics


class Environment(Contract):
    """The software a run was trained with."""

    python: ShortToken
    """Python version, e.g. '3.11.9'."""
    packages: Annotated[dict[PackageName, ShortToken], Field(max_length=MAX_PACKAGES)] = Field(
        default_factory=dict
    )
    """Installed distribution name → version."""
    platform: ShortText | None = None
    """e.g. 'Linux-6.8-x86_64'."""


class Evidence(Contract):
    """One measured comparison ``observed <operator> threshold`` behind a decision.

    In gate events the comparison is the stage's requirement (``satisfied`` false means the
    requirement failed). In ModelDegraded it is the rollout's ``degrade_if`` condition
    (``satisfied`` true means the limit was crossed). In CanaryHealthy it is the healthy limit.
    """

    metric: MetricName
    """What was measured: 'accuracy', 'latency_p95_ms', 'error_rate', 'completeness' …"""
    observed: FiniteFloat | None
    """Measured value; null when the metric was missing."""
    operator: Operator
    threshold: FiniteFloat | None
    """Limit compared against; null for checks without a numeric limit."""
    satisfied: bool | None = None
    """Whether the comparison held, as evaluated by the producer."""
    detail: ShortText | None = None
    """Optional human-readable detail (e.g. 'unsafe global os.system in model.pkl')."""

    @classmethod
    def evaluate(
        cls, metric: str, observed: float | None, operator: str, threshold: float | None
    ) -> "Evidence":
        """Build evidence with ``satisfied`` computed (a missing value never satisfies)."""
        satisfied = (
            observed is not None
            and threshold is not None
            and OPERATORS[operator](observed, threshold)
        )
        return cls(
            metric=metric,
            observed=observed,
            operator=operator,
            threshold=threshold,
            satisfied=satisfied,
        )


class Window(Contract):
    """A window of live traffic the monitor evaluated."""

    start: UtcDatetime
    end: UtcDatetime
    size: Count
    """Number of predictions (or labelled feedbacks) in the window."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end < self.start:
            raise ValueError("window end is before its start")
        return self
