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
PREDICTION_BATCH_LOGGED = "mlcp.prediction.batch_logged.v1"
DRIFT_DETECTED = "mlcp.drift.detected.v1"
MODEL_DEGRADED = "mlcp.model.degraded.v1"
CANARY_HEALTHY = "mlcp.canary.healthy.v1"
AUDIT_CHECKPOINTED = "mlcp.audit.checkpointed.v1"

JSON_TOPICS: tuple[str, ...] = (
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
    AUDIT_CHECKPOINTED,
)
"""The topics of structured-mode events (one JSON CloudEvent per record), in lifecycle order."""

BINARY_TOPICS: tuple[str, ...] = (PREDICTION_BATCH_LOGGED,)
"""The topics of binary-mode events (``ce_*`` headers, a non-JSON body):
``mlcp.contracts.prediction_batch`` describes them."""

ALL_TOPICS: tuple[str, ...] = JSON_TOPICS + BINARY_TOPICS
"""Every event topic of the catalog (dead-letter topics excluded): the structured ones in
lifecycle order, then the binary ones."""

TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    # The signed heads of the registry's audit chain are its anchor outside the database: kept
    # for ever, never compacted (a re-sent older checkpoint must not replace a newer one).
    AUDIT_CHECKPOINTED: {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"},
}
"""Topic-level settings a topic needs beyond the broker's defaults: ``mlcp bus apply`` creates
the topic with them and sets them back when they differ (the one place they are defined)."""


def topic_config(topic: str) -> dict[str, str]:
    """The settings ``topic`` (an event type behind any topic prefix) must have."""
    for event_type, config in TOPIC_CONFIGS.items():
        if topic.endswith(event_type):
            return dict(config)
    return {}


DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``: ``<topic>.dlq``."""
    return f"{topic}{DLQ_SUFFIX}"
