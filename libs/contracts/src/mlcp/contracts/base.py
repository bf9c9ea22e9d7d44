"""Base classes of every contract model."""

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """A frozen contract value: unknown fields are ignored (tolerant reader), floats are finite."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        allow_inf_nan=False,
        use_attribute_docstrings=True,
    )


class EventData(Contract):
    """The ``data`` of one event type; ``TYPE`` is its CloudEvents type and Kafka topic."""

    TYPE: ClassVar[str]
    KEY_FIELD: ClassVar[str] = "model"
    """The field whose value is the Kafka key and the CloudEvents ``subject``."""

    @property
    def key(self) -> str:
        """The natural key of this event (its model or dataset name)."""
        return str(getattr(self, self.KEY_FIELD))
