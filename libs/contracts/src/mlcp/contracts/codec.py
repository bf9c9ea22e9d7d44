"""Bytes ⇄ events: compact JSON structured-mode CloudEvents, validated against the catalog."""

import json
from typing import Any, NoReturn

from pydantic import ValidationError

from mlcp.contracts.catalog import EVENT_TYPES
from mlcp.contracts.envelope import SPECVERSION, CloudEvent, envelope_of
from mlcp.contracts.errors import (
    InvalidData,
    InvalidEnvelope,
    InvalidJson,
    NestingTooDeep,
    PayloadTooLarge,
    TypeMismatch,
    UnknownEventType,
)
from mlcp.contracts.nesting import MAX_JSON_DEPTH, nesting_exceeds

MAX_EVENT_BYTES = 1024 * 1024
"""Largest encoded event (1 MiB), just under Kafka's default max.message.bytes."""
MAX_REPORTED_ERRORS = 3
MAX_DESCRIBED_ERRORS = 1000
"""Beyond this many validation errors they are counted, not listed: pydantic builds each listed
error for ~10 µs, and a 1 MiB array of bad items holds half a million of them."""

_OPTIONAL_ATTRIBUTES = ("subject", "correlationid", "causationid")
_REQUIRED_ON_WIRE = ("id", "time")


def encode_event(event: CloudEvent[Any]) -> bytes:
    """Compact UTF-8 JSON of ``event``; absent optional attributes are omitted.

    Raises PayloadTooLarge when the result exceeds MAX_EVENT_BYTES.
    """
    exclude = {name for name in _OPTIONAL_ATTRIBUTES if getattr(event, name) is None}
    raw = event.model_dump_json(exclude=exclude, serialize_as_any=True).encode()
    if len(raw) > MAX_EVENT_BYTES:
        raise PayloadTooLarge(
            f"encoded {event.type} event is {len(raw)} bytes, over the {MAX_EVENT_BYTES} limit",
            event_type=event.type,
            event_id=event.id,
        )
    return raw


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"non-standard JSON constant {name}")


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"record is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except ValueError as exc:
        raise InvalidJson(f"record is not JSON: {exc}") from None
    except RecursionError:
        # Only when the depth limit was set near the interpreter's own (or the stack was deep).
        raise NestingTooDeep("record nests too deep to parse") from None
    if not isinstance(obj, dict):
        raise InvalidJson(f"record is a JSON {type(obj).__name__}, not an object") from None
    return obj


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def describe_errors(exc: ValidationError, *, limit: int = MAX_REPORTED_ERRORS) -> str:
    """One line naming each failing field: ``data.rows: Input should be ≥ 0 (got -1)``.

    More than MAX_DESCRIBED_ERRORS errors are only counted (listing them costs seconds).
    """
    count = exc.error_count()
    if count > MAX_DESCRIBED_ERRORS:
        return f"{count} errors, too many to list"
    parts: dict[str, None] = {}  # ordered and O(1) to test: an error list can be long
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(event)"
        line = f"{loc}: {err['msg']}"
        if err["type"] != "missing" and isinstance(err["input"], str | int | float | bool):
            line += f" (got {_short(err['input'])})"
        parts[line] = None
    shown = "; ".join(list(parts)[:limit])
    return shown + (f" (+{len(parts) - limit} more)" if len(parts) > limit else "")


def _largest_fields(data: Any, *, at_least: int = MAX_DESCRIBED_ERRORS) -> str:
    """``; data.x holds 400000 items`` for the (up to 3) largest containers in ``data``."""
    if not isinstance(data, dict):
        return ""
    sizes = sorted(
        ((len(value), name) for name, value in data.items() if isinstance(value, list | dict)),
        reverse=True,
    )
    big = [f"data.{str(name)[:40]} holds {n} items" for n, name in sizes[:3] if n >= at_least]
    return "; " + ", ".join(big) if big else ""


def decode_event(
    raw: bytes,
    *,
    expected_type: str | None = None,
    max_bytes: int = MAX_EVENT_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> CloudEvent[Any]:
    """Parse and validate one record; ``event.data`` is the model of the event's type.

    Refuses, before parsing, a record over ``max_bytes`` or nested deeper than ``max_depth``.
    Raises a ContractError subclass whose ``reason`` says what is wrong.
    """
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"record is {len(raw)} bytes, over the {max_bytes} limit")
    if nesting_exceeds(raw, max_depth):
        raise NestingTooDeep(f"record nests deeper than {max_depth} levels")
    obj = _parse(raw)
    event_id = obj.get("id") if isinstance(obj.get("id"), str) else None
    event_type = obj.get("type")
    if obj.get("specversion") != SPECVERSION:
        raise InvalidEnvelope(
            f"specversion must be {SPECVERSION!r}, got {_short(obj.get('specversion'))}",
            event_id=event_id,
        )
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEnvelope("type: missing or not a non-empty string", event_id=event_id)
    # The envelope defaults id and time for new events; on the wire they are required.
    missing = [name for name in _REQUIRED_ON_WIRE if name not in obj]
    if missing:
        raise InvalidEnvelope(
            f"invalid envelope of {event_type}: "
            + "; ".join(f"{name}: Field required" for name in missing),
            event_type=event_type,
            event_id=event_id,
        )
    model = EVENT_TYPES.get(event_type)
    if model is None:
        raise UnknownEventType(
            f"unknown event type {event_type!r}", event_type=event_type, event_id=event_id
        )
    if expected_type is not None and event_type != expected_type:
        raise TypeMismatch(
            f"event type {event_type!r} where {expected_type!r} was expected",
            event_type=event_type,
            event_id=event_id,
        )
    try:
        return envelope_of(model).model_validate(obj)
    except ValidationError as exc:
        if exc.error_count() > MAX_DESCRIBED_ERRORS:
            # Only a container can fail that often, and the envelope's attributes are scalars.
            raise InvalidData(
                f"invalid data of {event_type}: {describe_errors(exc)}"
                + _largest_fields(obj.get("data")),
                event_type=event_type,
                event_id=event_id,
            ) from None
        data_errors = all(err["loc"][:1] == ("data",) for err in exc.errors())
        missing_data = any(
            err["loc"] == ("data",) and err["type"] == "missing" for err in exc.errors()
        )
        error = InvalidData if data_errors and not missing_data else InvalidEnvelope
        what = "data" if error is InvalidData else "envelope"
        raise error(
            f"invalid {what} of {event_type}: {describe_errors(exc)}",
            event_type=event_type,
            event_id=event_id,
        ) from None
