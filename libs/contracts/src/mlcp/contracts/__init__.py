"""mlcp event contracts: the CloudEvents envelope, every event model, topic names, codec.

Example::

    from mlcp.contracts import DataArrived, new_event, encode_event, decode_event

    event = new_event(DataArrived(...), source="pipeline/churn")
    raw = encode_event(event)                      # compact UTF-8 JSON, ≤ 1 MiB
    again = decode_event(raw, expected_type=DataArrived.TYPE)
"""

from typing import Any

from mlcp.contracts.aliases import CANARY, PRODUCTION, SERVING_ALIASES
from mlcp.contracts.audit import AuditCheckpointed
from mlcp.contracts.base import Contract, EventData
from mlcp.contracts.catalog import EVENT_TYPES, model_for
from mlcp.contracts.clock import utcnow
from mlcp.contracts.codec import MAX_EVENT_BYTES, decode_event, describe_errors, encode_event
from mlcp.contracts.common import (
    ArtifactRef,
    Baseline,
    BatchRef,
    DatasetRef,
    Environment,
    Evidence,
    FeatureSpec,
    Window,
)
from mlcp.contracts.data import DataArrived
from mlcp.contracts.envelope import CloudEvent, envelope_of, new_event
from mlcp.contracts.errors import (
    ContractError,
    InvalidData,
    InvalidEnvelope,
    InvalidJson,
    NestingTooDeep,
    PayloadTooLarge,
    TypeMismatch,
    UnknownEventType,
)
from mlcp.contracts.gate import (
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    CheckPassed,
    ExternalCheckReported,
    GateFailed,
    GatePassed,
)
from mlcp.contracts.inference import FeedbackReceived, PredictionLogged
from mlcp.contracts.monitoring import (
    CanaryHealthy,
    DriftDetected,
    FeatureDrift,
    ModelDegraded,
)
from mlcp.contracts.nesting import MAX_JSON_DEPTH, nesting_exceeds
from mlcp.contracts.profile import (
    CategoricalProfile,
    NumericProfile,
    Quantile,
    ReferenceProfile,
)
from mlcp.contracts.registry import ModelPromoted, ModelRolledBack, ModelVersionRegistered
from mlcp.contracts.topics import ALL_TOPICS, BINARY_TOPICS, JSON_TOPICS, dlq_topic, topic_config
from mlcp.contracts.training import RunFailed, RunFinished, RunStarted, TrainingRequested


def json_schemas() -> dict[str, dict[str, Any]]:
    """Event type → JSON Schema of its envelope and data (see ``mlcp.contracts.schemas``)."""
    # Imported here so `python -m mlcp.contracts.schemas` does not find it already loaded.
    from mlcp.contracts import schemas

    return schemas.json_schemas()


__all__ = [
    "ALL_TOPICS",
    "BINARY_TOPICS",
    "CANARY",
    "EVENT_TYPES",
    "JSON_TOPICS",
    "MAX_EVENT_BYTES",
    "MAX_JSON_DEPTH",
    "PRODUCTION",
    "SERVING_ALIASES",
    "ApprovalGranted",
    "ApprovalRejected",
    "ApprovalRequested",
    "ArtifactRef",
    "AuditCheckpointed",
    "Baseline",
    "BatchRef",
    "CanaryHealthy",
    "CategoricalProfile",
    "CheckPassed",
    "CloudEvent",
    "Contract",
    "ContractError",
    "DataArrived",
    "DatasetRef",
    "DriftDetected",
    "Environment",
    "EventData",
    "Evidence",
    "ExternalCheckReported",
    "FeatureDrift",
    "FeatureSpec",
    "FeedbackReceived",
    "GateFailed",
    "GatePassed",
    "InvalidData",
    "InvalidEnvelope",
    "InvalidJson",
    "ModelDegraded",
    "ModelPromoted",
    "ModelRolledBack",
    "ModelVersionRegistered",
    "NestingTooDeep",
    "NumericProfile",
    "PayloadTooLarge",
    "PredictionLogged",
    "Quantile",
    "ReferenceProfile",
    "RunFailed",
    "RunFinished",
    "RunStarted",
    "TrainingRequested",
    "TypeMismatch",
    "UnknownEventType",
    "Window",
    "decode_event",
    "describe_errors",
    "dlq_topic",
    "encode_event",
    "envelope_of",
    "json_schemas",
    "model_for",
    "nesting_exceeds",
    "new_event",
    "topic_config",
    "utcnow",
]
