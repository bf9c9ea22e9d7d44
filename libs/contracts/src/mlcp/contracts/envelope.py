"""The CloudEvents 1.0 envelope (JSON structured mode) and ``new_event``."""

import re
import uuid
from typing import Annotated, Any, Final, Generic, Literal, Self, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from mlcp.contracts.base import EventData
from mlcp.contracts.clock import utcnow
from mlcp.contracts.types import MAX_ID_LENGTH, MAX_URI_LENGTH, Token, UtcDatetime

DataT = TypeVar("DataT", bound=EventData)
D = TypeVar("D", bound=EventData)

SPECVERSION: Final = "1.0"
DATACONTENTTYPE: Final = "application/json"
EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
"""CloudEvents extension attribute names: lowercase letters and digits (≤ 20 recommended)."""
EVENT_TYPE_PATTERN = r"^[a-z0-9]+(?:\.[a-z0-9_]+)*\.v[0-9]+$"

_ENVELOPE_NAMES = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "subject",
        "datacontenttype",
        "correlationid",
        "causationid",
        "data",
    }
)


def _new_id() -> str:
    return str(uuid.uuid4())


class CloudEvent(BaseModel, Generic[DataT]):
    """A CloudEvents 1.0 event in JSON structured mode, one per Kafka record.

    Build one with :func:`new_event`; ``CloudEvent[RunFinished]`` is the envelope of one type.
    Unknown extension attributes with valid names and scalar values are kept (and re-encoded);
    others are ignored.
    """

    model_config = ConfigDict(frozen=True, extra="allow", use_attribute_docstrings=True)

    specversion: Literal["1.0"] = SPECVERSION
    """CloudEvents version."""
    id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)] = Field(
        default_factory=_new_id
    )
    """Unique per event (a UUID4 by default); consumers deduplicate on it."""
    source: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_URI_LENGTH, pattern=r"^\S+$")
    ]
    """The producer, 'mlcp/<service>' or 'pipeline/<name>'."""
    type: Annotated[str, StringConstraints(max_length=256, pattern=EVENT_TYPE_PATTERN)]
    """Event type, also the Kafka topic: 'mlcp.run.finished.v1'."""
    time: UtcDatetime = Field(default_factory=utcnow)
    """When the event happened (RFC 3339, UTC)."""
    subject: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)] | None = None
    """The Kafka key: the model (or dataset) name."""
    datacontenttype: Literal["application/json"] = DATACONTENTTYPE
    correlationid: Token | None = None
    """Extension: id shared by every event of one model lifecycle (the first event's id)."""
    causationid: Token | None = None
    """Extension: id of the event that directly caused this one."""
    data: DataT

    @model_validator(mode="before")
    @classmethod
    def _keep_valid_extensions(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            name: item
            for name, item in value.items()
            if name in _ENVELOPE_NAMES
            or (
                isinstance(name, str)
                and EXTENSION_NAME.match(name) is not None
                and isinstance(item, str | int | bool)
            )
        }

    @model_validator(mode="after")
    def _type_matches_data(self) -> Self:
        data_type = getattr(type(self.data), "TYPE", None)
        if data_type is not None and data_type != self.type:
            raise ValueError(f"type {self.type!r} does not match data of type {data_type!r}")
        return self

    @property
    def extensions(self) -> dict[str, Any]:
        """Extension attributes beyond correlationid/causationid (e.g. a 'dataschema')."""
        return dict(self.model_extra or {})


def envelope_of(model: type[D]) -> type[CloudEvent[D]]:
    """The envelope class ``CloudEvent[model]`` (pydantic caches parametrisations)."""
    return CloudEvent[model]  # type: ignore[valid-type]


@overload
def new_event(
    data: D,
    *,
    source: str,
    subject: str | None = None,
    correlationid: str | None = None,
    causationid: str | None = None,
    id: str | None = None,
) -> CloudEvent[D]: ...
@overload
def new_event(
    data: BaseModel,
    *,
    source: str,
    subject: str | None = None,
    correlationid: str | None = None,
    causationid: str | None = None,
    id: str | None = None,
) -> CloudEvent[Any]: ...
def new_event(
    data: BaseModel,
    *,
    source: str,
    subject: str | None = None,
    correlationid: str | None = None,
    causationid: str | None = None,
    id: str | None = None,
) -> CloudEvent[Any]:
    """Wrap ``data`` in a new envelope; type = ``data.TYPE``, subject defaults to ``data.key``."""
    if not isinstance(data, EventData):
        raise TypeError(f"{type(data).__name__} is not an mlcp event model (no TYPE)")
    fields: dict[str, Any] = {
        "source": source,
        "type": data.TYPE,
        "subject": subject if subject is not None else data.key,
        "correlationid": correlationid,
        "causationid": causationid,
        "data": data,
    }
    if id is not None:
        fields["id"] = id
    return envelope_of(type(data))(**fields)
