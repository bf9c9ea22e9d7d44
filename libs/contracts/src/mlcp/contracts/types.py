"""Shared validated field types and size limits of every mlcp contract.

The limits keep one event well under ``MAX_EVENT_BYTES`` in ordinary use and stop a buggy
producer from flooding consumers; a breaking change to any of them is a new ``.v2`` type.
"""

import functools
from datetime import UTC, datetime
from typing import Annotated, Literal

import semver
from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
)

# --- size limits -------------------------------------------------------------------------------
MAX_NAME_LENGTH = 128
MAX_ID_LENGTH = 256
MAX_URI_LENGTH = 2048
MAX_SHORT_TEXT_LENGTH = 256
MAX_TEXT_LENGTH = 4096
MAX_ERROR_LENGTH = 16384
MAX_SCALAR_STRING_LENGTH = 1024
MAX_FEATURES = 1000
MAX_METRICS = 256
MAX_PARAMS = 256
MAX_PACKAGES = 2000
MAX_DATASETS = 64
MAX_BATCH_IDS = 10_000
MAX_TRIGGERS = 1000
MAX_EVIDENCE = 100
MAX_STAGES = 64
MAX_BINS = 100
MAX_QUANTILES = 101
MAX_SAMPLE = 1000
MAX_CATEGORIES = 200
MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer every JSON consumer (including JavaScript) reads exactly."""

# --- patterns ----------------------------------------------------------------------------------
SLUG_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
"""Model, dataset, stage and alias names: lowercase ASCII letters, digits, ``.``, ``_``, ``-``;
starting with a letter or digit; 1-128 characters. Safe in Kafka keys, URLs and file names."""
KEY_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:/@-]{0,127}$"
"""Metric and parameter names (MLflow-like): ``accuracy``, ``latency_p95_ms``, ``clf__C``."""
TOKEN_PATTERN = r"^[!-~]+$"
"""Opaque identifiers (run, batch, request, event ids): printable ASCII, no spaces."""
VISIBLE_PATTERN = r"^\S(?:.*\S)?$"
"""Single-line, non-blank text without leading or trailing whitespace."""
FEATURE_NAME_PATTERN = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$"
"""Feature (column) names: any characters but control characters, no leading/trailing space."""
PACKAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
SEMVER_PATTERN = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
"""The official semver.org 2.0.0 regular expression (published in the schemas only)."""


@functools.lru_cache(maxsize=4096)
def _valid_semver(value: str) -> bool:
    # A handful of versions recur in every prediction: parse each once, not per event.
    return bool(semver.Version.is_valid(value))


def _check_semver(value: str) -> str:
    if not _valid_semver(value):
        raise ValueError(f"{value!r} is not a SemVer 2.0.0 version such as '1.4.0'")
    return value


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # a far-edge date shifted past year 1 / 9999
        raise ValueError("datetime out of range once converted to UTC") from exc


# --- names and identifiers ---------------------------------------------------------------------
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
ModelName = Annotated[Slug, Field(description="Model name: lowercase slug, 1-128 characters.")]
DatasetName = Annotated[Slug, Field(description="Dataset name: lowercase slug, 1-128 characters.")]
StageName = Annotated[
    Slug, Field(description="Approval-DAG stage name: lowercase slug, 1-128 characters.")
]
AliasName = Annotated[
    Slug, Field(description="Serving alias: 'canary', 'production' or a custom slug.")
]
Token = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=TOKEN_PATTERN),
]
Principal = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_SHORT_TEXT_LENGTH, pattern=VISIBLE_PATTERN),
    Field(description="A person or system account, e.g. 'alice@example.com', 'github-ci'."),
]
MetricName = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
ParamName = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
FeatureName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256, pattern=FEATURE_NAME_PATTERN),
]
PackageName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH, pattern=PACKAGE_PATTERN)
]
ShortToken = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH, pattern=TOKEN_PATTERN)
]
"""A short opaque token: package versions, code versions, dtype names, formats."""

# --- text --------------------------------------------------------------------------------------
ShortText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_SHORT_TEXT_LENGTH, pattern=VISIBLE_PATTERN),
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_LENGTH, pattern=r"\S")]
"""Free text (may span lines), not blank."""
ErrorText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ERROR_LENGTH, pattern=r"\S")
]
"""An error message or truncated traceback; producers truncate to MAX_ERROR_LENGTH."""
Uri = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_URI_LENGTH, pattern=r"^\S+$"),
    Field(description="URI reference (s3://…, file://…, https://…), at most 2048 characters."),
]

# --- digests and versions ----------------------------------------------------------------------
Sha256Hex = Annotated[
    str,
    StringConstraints(pattern=SHA256_PATTERN),
    Field(description="SHA-256 digest: 64 lowercase hex characters."),
]
SemVer = Annotated[
    str,
    StringConstraints(max_length=MAX_NAME_LENGTH),
    AfterValidator(_check_semver),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": MAX_NAME_LENGTH,
            "pattern": SEMVER_PATTERN,
            "description": "SemVer 2.0.0 version, e.g. '1.4.0' (no leading 'v').",
        }
    ),
]

# --- numbers -----------------------------------------------------------------------------------
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Ratio = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]
SafeInt = Annotated[StrictInt, Field(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]

Scalar = (
    StrictBool
    | SafeInt
    | FiniteFloat
    | Annotated[str, StringConstraints(max_length=MAX_SCALAR_STRING_LENGTH)]
)
"""A JSON scalar: boolean, safe integer, finite number or string (≤ 1024 characters)."""
FeatureValue = Scalar | None
"""A feature value; a missing value is ``null`` (never NaN)."""
ParamValue = Scalar | None
"""A training parameter value; structured values are sent as their string form."""

Metrics = Annotated[dict[MetricName, FiniteFloat], Field(max_length=MAX_METRICS)]
Params = Annotated[dict[ParamName, ParamValue], Field(max_length=MAX_PARAMS)]

# --- time --------------------------------------------------------------------------------------
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware instant, normalised to UTC; serialised as RFC 3339 with ``Z``."""

# --- enumerations ------------------------------------------------------------------------------
TrainingReason = Literal["data_threshold", "drift", "manual"]
CheckKind = Literal["metrics", "data_quality", "baseline", "security_scan", "external", "manual"]
Operator = Literal[">=", ">", "<=", "<", "==", "!="]
BumpKind = Literal["major", "minor", "patch"]
DriftMethod = Literal["psi", "ks", "chi2"]
CheckStatus = Literal["passed", "failed"]
PromotionCause = Literal["gate_passed", "canary_healthy", "manual"]
RollbackCause = Literal["degraded", "manual"]
