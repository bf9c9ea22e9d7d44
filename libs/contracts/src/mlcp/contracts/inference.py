"""Events of inference services: predictions and their ground truth."""

from typing import Annotated, ClassVar, Self

from pydantic import Field, model_validator

from mlcp.contracts import topics
from mlcp.contracts.base import EventData
from mlcp.contracts.types import (
    MAX_FEATURES,
    AliasName,
    FeatureName,
    FeatureValue,
    ModelName,
    NonNegativeFloat,
    Ratio,
    Scalar,
    SemVer,
    Token,
    UtcDatetime,
)


class PredictionLogged(EventData):
    """An inference service answered (or failed to answer) one request.

    Emitted by inference services per request; the monitor builds its live-traffic windows
    (latency, errors, drift) from it. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.PREDICTION_LOGGED

    model: ModelName
    version: SemVer
    """The version that served the request."""
    alias: AliasName | None = None
    """The alias the request was routed through ('production', 'canary'), if known."""
    request_id: Token
    """Unique per request; FeedbackReceived refers to it."""
    features: Annotated[dict[FeatureName, FeatureValue], Field(max_length=MAX_FEATURES)]
    """Input feature values; a missing value is null, never NaN."""
    prediction: Scalar | None = None
    """The model's output (class label or value); null only when error is true."""
    probability: Ratio | None = None
    """Probability of the predicted class (or of the positive class), if the model gives one."""
    latency_ms: NonNegativeFloat
    ts: UtcDatetime
    """When the request was served."""
    error: bool = False
    """The request failed (counts toward the error rate)."""

    @model_validator(mode="after")
    def _has_prediction(self) -> Self:
        if not self.error and self.prediction is None:
            raise ValueError("prediction is required unless error is true")
        return self


class FeedbackReceived(EventData):
    """The true label of an earlier prediction became known.

    Emitted by inference services (or labelling pipelines); the monitor joins it to the
    PredictionLogged with the same ``request_id`` for live accuracy. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.FEEDBACK_RECEIVED

    model: ModelName
    version: SemVer | None = None
    """Version that made the prediction, if the sender knows it."""
    request_id: Token
    label: Scalar
    ts: UtcDatetime
    """When the label was observed."""
