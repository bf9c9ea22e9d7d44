"""Topic names. An event's CloudEvents ``type`` is also the Kafka topic it travels on."""

DATA_ARRIVED = "mlcp.data.arrived.v1"
TRAINING_REQUESTED = "mlcp.training.requested.v1"
RUN_STARTED = "mlcp.run.started.v1"
RUN_FINISHED = "mlcp.run.finished.v1"
RUN_FAILED = "mlcp.run.failed.v1"
MODEL_REGISTERED = "mlcp.model.registered.v1"
GATE_CHECK_PASSED = "mlcp.gate.check_passed.v1"
GATE_FAILED = "mlcp.gate.failed.v1"
GATE_PASSED = "mlcp.gate.passed.v1"
APPROVAL_REQUESTED = "mlcp.approval.requested.v1"
APPROVAL_GRANTED = "mlcp.approval.granted.v1"
APPROVAL_REJECTED = "mlcp.approval.rejected.v1"
CHECK_REPORTED = "mlcp.check.reported.v1"
MODEL_PROMOTED = "mlcp.model.promoted.v1"
MODEL_ROLLED_BACK = "mlcp.model.rolled_back.v1"
PREDICTION_LOGGED = "mlcp.prediction.logged.v1"
FEEDBACK_RECEIVED = "mlcp.feedback.received.v1"
DRIFT_DETECTED = "mlcp.drift.detected.v1"
MODEL_DEGRADED = "mlcp.model.degraded.v1"
CANARY_HEALTHY = "mlcp.canary.healthy.v1"

ALL_TOPICS: tuple[str, ...] = (
    DATA_ARRIVED,
    TRAINING_REQUESTED,
    RUN_STARTED,
    RUN_FINISHED,
    RUN_FAILED,
    MODEL_REGISTERED,
    GATE_CHECK_PASSED,
    GATE_FAILED,
    GATE_PASSED,
    APPROVAL_REQUESTED,
    APPROVAL_GRANTED,
    APPROVAL_REJECTED,
    CHECK_REPORTED,
    MODEL_PROMOTED,
    MODEL_ROLLED_BACK,
    PREDICTION_LOGGED,
    FEEDBACK_RECEIVED,
    DRIFT_DETECTED,
    MODEL_DEGRADED,
    CANARY_HEALTHY,
)
"""Every event topic of the catalog, in lifecycle order (dead-letter topics excluded)."""

DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``: ``<topic>.dlq``."""
    return f"{topic}{DLQ_SUFFIX}"
