"""The event catalog: every CloudEvents type (= topic) and the model of its ``data``."""

from mlcp.contracts.audit import AuditCheckpointed
from mlcp.contracts.base import EventData
from mlcp.contracts.data import DataArrived
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
from mlcp.contracts.monitoring import CanaryHealthy, DriftDetected, ModelDegraded
from mlcp.contracts.registry import ModelPromoted, ModelRolledBack, ModelVersionRegistered
from mlcp.contracts.topics import JSON_TOPICS
from mlcp.contracts.training import RunFailed, RunFinished, RunStarted, TrainingRequested

_MODELS: tuple[type[EventData], ...] = (
    DataArrived,
    TrainingRequested,
    RunStarted,
    RunFinished,
    RunFailed,
    ModelVersionRegistered,
    CheckPassed,
    GateFailed,
    GatePassed,
    ApprovalRequested,
    ApprovalGranted,
    ApprovalRejected,
    ExternalCheckReported,
    ModelPromoted,
    ModelRolledBack,
    PredictionLogged,
    FeedbackReceived,
    DriftDetected,
    ModelDegraded,
    CanaryHealthy,
    AuditCheckpointed,
)

EVENT_TYPES: dict[str, type[EventData]] = {model.TYPE: model for model in _MODELS}
"""CloudEvents type (= Kafka topic) → model class of the event's ``data``, for every
structured-mode (JSON) event; the binary-mode batch is ``mlcp.contracts.prediction_batch``."""

if tuple(EVENT_TYPES) != JSON_TOPICS:  # pragma: no cover - guards edits of the catalog
    raise RuntimeError("EVENT_TYPES and JSON_TOPICS disagree")


def model_for(event_type: str) -> type[EventData] | None:
    """The data model of ``event_type``, or None when the type is not in the catalog."""
    return EVENT_TYPES.get(event_type)
