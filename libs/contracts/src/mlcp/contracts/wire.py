"""The fast path of the high-volume events (PredictionLogged, FeedbackReceived): msgspec decoding
that accepts nothing the pydantic models refuse.

A prediction log is small and arrives by the tens of thousands per second; validating each one
through the envelope and data models costs ~40 µs, more than Kafka's own delivery of it. Here a
record is parsed by msgspec into plain structs in one C call (types, required fields, numeric
ranges, lengths), and the constraints msgspec cannot express exactly are checked **with the
models' own field types**, a column at a time or once per distinct value:

* strings with patterns (names, SemVer, tokens, feature names) by the field's pydantic type —
  per distinct value for the few that repeat (model, version, source…), per batch for ids;
* ``time`` and ``ts`` by pydantic's own datetime parser (msgspec rounds digits past the
  microsecond where pydantic truncates), then normalised to UTC like ``UtcDatetime``;
* the models' cross-field rules (a prediction unless ``error``).

``decode`` answers, per record, the decoded event or None: "not sure, ask ``decode_event``". It
is conservative by design — lax inputs the models coerce (``"3.5"`` for a float, ``1`` for a
bool), integers beyond ±2**53, offsets that overflow — fall back to ``decode_event``, whose
event is then converted (:meth:`WireDecoder.adopt`), so a handler sees one type and the dead
letter of a bad record carries the models' reason. ``tests/contracts/test_contracts_wire.py``
checks the equivalence on examples, generated events and mutated bytes.

Envelope extension attributes are not kept (the consumers of these events do not read them).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from pydantic import AwareDatetime, BaseModel, TypeAdapter, ValidationError

from mlcp.contracts.codec import MAX_EVENT_BYTES
from mlcp.contracts.envelope import CloudEvent
from mlcp.contracts.inference import FeedbackReceived, PredictionLogged
from mlcp.contracts.nesting import MAX_JSON_DEPTH, nesting_exceeds
from mlcp.contracts.types import (
    MAX_FEATURES,
    MAX_ID_LENGTH,
    MAX_SAFE_INTEGER,
    MAX_SCALAR_STRING_LENGTH,
    FeatureName,
    Token,
)

_MAX_FLOAT = sys.float_info.max
# ``allow_inf_nan=False`` as ranges msgspec checks in C: JSON has no NaN, and a number too large
# for a double parses as ±inf, which these bounds refuse.
FiniteFloat = Annotated[float, Meta(ge=-_MAX_FLOAT, le=_MAX_FLOAT)]
NonNegativeFloat = Annotated[float, Meta(ge=0, le=_MAX_FLOAT)]
Ratio = Annotated[float, Meta(ge=0, le=1)]
SafeInt = Annotated[int, Meta(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
ScalarString = Annotated[str, Meta(max_length=MAX_SCALAR_STRING_LENGTH)]
Scalar = bool | SafeInt | FiniteFloat | ScalarString
"""The models' ``Scalar`` (JSON true → bool, 1 → int, 1.0 → float, "x" → str, as pydantic's
smart union picks)."""


class PredictionLoggedWire(msgspec.Struct, gc=False):
    """``PredictionLogged`` as decoded by the fast path (same field names and values)."""

    model: str
    version: str
    request_id: str
    features: Annotated[dict[str, Scalar | None], Meta(max_length=MAX_FEATURES)]
    latency_ms: NonNegativeFloat
    ts: datetime
    alias: str | None = None
    prediction: Scalar | None = None
    probability: Ratio | None = None
    error: bool = False


class FeedbackReceivedWire(msgspec.Struct, gc=False):
    """``FeedbackReceived`` as decoded by the fast path (same field names and values)."""

    model: str
    request_id: str
    label: Scalar
    ts: datetime
    version: str | None = None


class WireEvent(msgspec.Struct, gc=False):
    """The envelope as decoded by the fast path: ``CloudEvent`` without extension attributes;
    ``data`` is a :class:`PredictionLoggedWire` or a :class:`FeedbackReceivedWire`."""

    specversion: Literal["1.0"]
    id: Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    source: str
    type: str
    time: datetime
    data: Any
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    correlationid: str | None = None
    causationid: str | None = None


_ID_HINT = re.compile(rb'"id"\s*:\s*"([\x21\x23-\x5b\x5d-\x7e]{1,256})"')
"""``"id": "<printable ASCII without quote or backslash>"``: ids that need escapes get no hint."""


def _raw_twin(cls: type[Any], name: str, *, closed: bool = False, **overrides: Any) -> Any:
    """A subclass of ``cls`` with the ``overrides`` field types: the concrete ``data`` of an
    envelope, the one ``type`` accepted, instants decoded as str (parsed afterwards by
    pydantic, in place) — the objects remain instances of ``cls``. ``closed``: a member the
    struct does not declare is an error."""
    fields = list(overrides.items())
    return msgspec.defstruct(name, fields, bases=(cls,), gc=False, forbid_unknown_fields=closed)


def _adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    """The validation of one field of a model, as the model itself applies it."""
    info = model.model_fields[name]
    annotation: Any = info.annotation
    if info.metadata:
        annotation = Annotated[(annotation, *info.metadata)]
    return TypeAdapter(annotation)


class _Known:
    """Validity of values that repeat from event to event, checked once per distinct value.

    Here the tuple (source, subject, model, version[, alias, *feature names]): a dict lookup
    per event instead of five validations. Bounded, so a stream of distinct values cannot grow
    it without limit.
    """

    LIMIT = 10_000

    def __init__(self, check: Callable[[Any], object]) -> None:
        self._check = check
        self.verdicts: dict[Hashable, bool] = {}

    def __call__(self, value: Hashable) -> bool:
        verdict = self.verdicts.get(value)
        if verdict is None:
            try:
                self._check(value)
                verdict = True
            except ValidationError:
                verdict = False
            if len(self.verdicts) >= self.LIMIT:
                self.verdicts.clear()
            self.verdicts[value] = verdict
        return verdict


def _column_errors(
    adapter: TypeAdapter[Any], values: list[Any]
) -> tuple[list[Any] | None, set[int]]:
    """Validate a column in one call: (the validated values, or None; the positions refused)."""
    try:
        return adapter.validate_python(values), set()
    except ValidationError as exc:
        return None, {int(err["loc"][0]) for err in exc.errors(include_url=False) if err["loc"]}


_TOKENS: TypeAdapter[list[Token]] = TypeAdapter(list[Token])
_OPTIONAL_TOKENS: TypeAdapter[list[Token | None]] = TypeAdapter(list[Token | None])
_INSTANTS: TypeAdapter[list[AwareDatetime]] = TypeAdapter(list[AwareDatetime])
_FEATURE_NAMES: TypeAdapter[list[FeatureName]] = TypeAdapter(list[FeatureName])


class WireDecoder:
    """Decodes the records of one high-volume event type; see the module's docstring."""

    def __init__(
        self,
        model: type[PredictionLogged] | type[FeedbackReceived],
        *,
        max_bytes: int = MAX_EVENT_BYTES,
        max_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        self.event_type = model.TYPE
        self._model = model
        # decode_event's limits: a record past them is left to it, to be refused with a reason.
        self._max_bytes = max_bytes
        self._max_depth = max_depth
        wire: type[Any] = _WIRE_OF[model]
        self._event = _raw_twin(WireEvent, f"{model.__name__}Event", data=wire)
        decoders = []
        for closed in (True, False):
            raw_data = _raw_twin(wire, f"_Raw{wire.__name__}", closed=closed, ts=str)
            raw_event = _raw_twin(
                self._event,
                f"_Raw{model.__name__}Event",
                closed=closed,
                type=Literal[model.TYPE],  # another type is TypeMismatch: decode_event's to tell
                time=str,
                data=raw_data,
            )
            decoders.append(msgspec.json.Decoder(raw_event))
        # Closed: a record with no member the structs do not declare nests 3 levels at most
        # (envelope, data, features of scalars), within any depth limit, so it needs no depth
        # check; one with other members (extension attributes, future fields) is measured,
        # then decoded by the open structs, which skip those members.
        self._closed, self._open = decoders
        envelope: Any = CloudEvent
        self._source = _adapter(envelope, "source").validate_python
        self._subject = _adapter(envelope, "subject").validate_python
        self._model_name = _adapter(model, "model").validate_python
        self._version = _adapter(model, "version").validate_python
        if model is PredictionLogged:
            self._alias = _adapter(model, "alias").validate_python
        self._known = _Known(self._valid_repeating)

    def decode(self, values: Sequence[bytes | None]) -> list[WireEvent | None]:
        """Per record: its event, or None where ``decode_event`` must decide."""
        out: list[Any] = [None] * len(values)
        events: list[Any] = []
        where: list[int] = []
        closed, decode = self._closed.decode, self._open.decode
        known, verdicts = self._known, self._known.verdicts
        prediction = self._model is PredictionLogged
        max_bytes, max_depth = self._max_bytes, self._max_depth
        for i, raw in enumerate(values):
            if not raw or len(raw) > max_bytes:
                continue
            try:
                event = closed(raw)  # the usual record: no depth check needed (see __init__)
            except Exception:
                # Other members (or a bad record): decode_event's depth rule first, so that a
                # deep member the open structs would skip is refused as decode_event does.
                if nesting_exceeds(raw, max_depth):
                    continue
                try:
                    event = decode(raw)
                except Exception:  # anything the bytes provoke is decode_event's to name
                    continue
            data = event.data
            key: tuple[Any, ...]
            # The values that repeat from event to event, validated once per distinct set.
            if prediction:
                if not data.error and data.prediction is None:
                    continue  # the model's rule: a prediction unless the request failed
                key = (event.source, event.subject, data.model, data.version, data.alias)
                key += tuple(data.features)
            else:
                key = (event.source, event.subject, data.model, data.version)
            if verdicts.get(key) or known(key):
                events.append(event)
                where.append(i)
        if events:
            for k in self._check_columns(events):
                out[where[k]] = events[k]
        return out

    def ids(self, values: Sequence[bytes | None]) -> list[str | None]:
        """Per record, a hint of its event id (~8× cheaper than ``decode``): lets a consumer
        claim the ids in its inbox while it decodes the records.

        A hint, not a decoding: the first ``"id"`` member of the text, which is the envelope's
        in every encoder that writes the envelope's members before ``data``; a consumer must
        claim the ids a hint missed and release those that were not its events'.
        """
        search = _ID_HINT.search
        return [found[1].decode() if raw and (found := search(raw)) else None for raw in values]

    def adopt(self, event: CloudEvent[Any]) -> WireEvent:
        """The fast path's form of an event ``decode_event`` decoded (a record it left)."""
        fields = event.model_dump(exclude=set(event.model_extra or ()))
        return msgspec.convert(fields, self._event)  # type: ignore[no-any-return]

    def _valid_repeating(self, key: tuple[Any, ...]) -> None:
        """Validate (source, subject, model, version[, alias, *feature names]) by the models'
        own field types; raises ValidationError."""
        source, subject, model, version, *rest = key
        self._source(source)
        if subject is not None:
            self._subject(subject)
        self._model_name(model)
        if version is not None:
            self._version(version)
        if rest:
            alias, *features = rest
            if alias is not None:
                self._alias(alias)
            _FEATURE_NAMES.validate_python(features)

    def _check_columns(self, events: list[Any]) -> list[int]:
        """Validate the per-event-unique columns in one call each; the positions that pass,
        with ``time`` and ``ts`` parsed (and normalised to UTC) in place."""
        n = len(events)
        bad: set[int] = set()
        _, refused = _column_errors(_TOKENS, [e.data.request_id for e in events])
        bad |= refused
        for name in ("correlationid", "causationid"):
            column = [getattr(e, name) for e in events]
            if any(v is not None for v in column):
                _, refused = _column_errors(_OPTIONAL_TOKENS, column)
                bad |= refused
        times = self._instants([e.time for e in events], bad)
        stamps = self._instants([e.data.ts for e in events], bad)
        good = [k for k in range(n) if k not in bad]
        for k in good:
            events[k].time = times[k]
            events[k].data.ts = stamps[k]
        return good

    @staticmethod
    def _instants(texts: list[str], bad: set[int]) -> list[datetime | None]:
        """Parse RFC 3339 strings as ``UtcDatetime`` does; refused ones are added to ``bad``."""
        parsed, refused = _column_errors(_INSTANTS, texts)
        if parsed is None:
            bad |= refused
            parsed = [
                None if k in refused else _INSTANTS.validate_python([t])[0]
                for k, t in enumerate(texts)
            ]
        out: list[datetime | None] = []
        for k, (text, instant) in enumerate(zip(texts, parsed, strict=True)):
            if instant is not None and text[-1] not in "Zz":
                try:
                    instant = instant.astimezone(UTC)
                except OverflowError:  # shifted past year 1 / 9999: the model refuses it too
                    bad.add(k)
                    instant = None
            out.append(instant)
        return out


_WIRE_OF: dict[type[BaseModel], type[Any]] = {
    PredictionLogged: PredictionLoggedWire,
    FeedbackReceived: FeedbackReceivedWire,
}


def wire_decoder(
    event_type: str, *, max_bytes: int = MAX_EVENT_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> WireDecoder | None:
    """The fast decoder of ``event_type`` (with decode_event's limits), or None for the types
    that have none."""
    for model in _WIRE_OF:
        if getattr(model, "TYPE", None) == event_type:
            return WireDecoder(model, max_bytes=max_bytes, max_depth=max_depth)  # type: ignore[arg-type]
    return None
