"""What a model predicts, and when a prediction counts as correct: ``models.<name>.target``.

One rule for the whole platform: the monitor's live accuracy (PredictionLogged against
FeedbackReceived) and the trainer's holdout accuracy (the fitted model against the held-out
labels) both turn every value into its **key** with :meth:`Target.key` and compare keys with
:meth:`Target.agrees`, so the offline accuracy a version is registered with and the live
accuracy it is judged by mean the same thing.

* ``classification`` with ``type: boolean | integer | string``: a value must be of that type
  (an integer may be written 1 or 1.0, JSON does not tell them apart) once ``mapping`` has
  replaced other spellings of a class (``{true: 1, false: 0}``); anything else does not fit.
* ``classification`` with ``type: auto`` (the default, for models that declare nothing): every
  value fits; booleans count as 1 / 0 and numbers, or strings that spell a number, compare by
  value (``true``, ``1``, ``1.0`` and ``"1"`` agree), other strings as written.
* ``regression``: numbers only; correct when ``|prediction - label| <= tolerance``.

Pure: no I/O; used by the monitor's handlers and by the trainer's training child.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_serializer,
    field_validator,
    model_validator,
)

TargetValue = StrictBool | StrictInt | StrictFloat | StrictStr
"""A class or a value as the YAML writes it (a mapping's key or value)."""


class LabelMismatch(ValueError):
    """A prediction or a label that does not fit the model's declared target."""


def show(value: object) -> str:
    """A value as JSON writes it (``true``, ``1``, ``"1"``): the forms that must not be confused."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _plain(value: object) -> object:
    """numpy / pandas scalars (what a fitted model predicts) → the Python value they hold."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _mapping_key(value: object) -> tuple[str, object]:
    # Tagged, so that ``true`` never finds the entry of ``1`` (Python has True == 1).
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    return ("string", value)


def _number_key(number: float) -> str:
    if math.isfinite(number) and number.is_integer():
        return str(int(number))
    return repr(number)


class Target(BaseModel):
    """``models.<name>.target``: the kind of model and how its outputs are compared."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["classification", "regression"] = "classification"
    type: Literal["auto", "boolean", "integer", "string"] = "auto"
    """classification: the type of the classes."""
    mapping: dict[TargetValue, TargetValue] = Field(default_factory=dict)
    """classification: other spellings of a class → the class, e.g. ``{true: 1, false: 0}``."""
    tolerance: float | None = Field(None, ge=0)
    """regression (required): a prediction within this distance of its label is correct."""

    _lookup: dict[tuple[str, object], object] = PrivateAttr(default_factory=dict)

    @field_validator("mapping", mode="before")
    @classmethod
    def _from_pairs(cls, value: Any) -> Any:
        # The JSON form is a list of [spelling, class] pairs (JSON keys are strings only).
        if isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value):
            return dict(value)
        return value

    @field_serializer("mapping", when_used="json")
    def _to_pairs(self, mapping: dict[TargetValue, TargetValue]) -> list[list[TargetValue]]:
        return [[k, v] for k, v in mapping.items()]

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.kind == "regression":
            for key in ("type", "mapping"):
                if key in self.model_fields_set:
                    raise ValueError(f"a regression target takes no {key!r}")
            if self.tolerance is None:
                raise ValueError("a regression target needs a tolerance")
            return self
        if self.tolerance is not None:
            raise ValueError("only a regression target takes a tolerance")
        for source, value in self.mapping.items():
            try:
                self._typed(value)
            except LabelMismatch as exc:
                raise ValueError(f"mapping[{show(source)}]: {exc}") from None
        self._lookup.update((_mapping_key(k), v) for k, v in self.mapping.items())
        return self

    @property
    def strict(self) -> bool:
        """Whether some values do not fit (every value fits a classification of type auto)."""
        return self.kind == "regression" or self.type != "auto"

    def describe(self) -> str:
        """The target in a few words, for error messages."""
        if self.kind == "regression":
            return f"regression, tolerance {self.tolerance:g}"
        mapped = f", mapping {', '.join(map(show, self.mapping))}" if self.mapping else ""
        return f"classification, type {self.type}{mapped}"

    def key(self, value: Any) -> str:
        """The comparable form of a prediction or a label; ``LabelMismatch`` when it does not
        fit the target (the reason names the value and the expected type)."""
        value = _plain(value)
        if self.kind == "regression":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise LabelMismatch(f"{show(value)} is not a number")
            if not math.isfinite(value):
                raise LabelMismatch(f"{show(value)} is not a finite number")
            return repr(float(value))
        if self.mapping and isinstance(value, bool | int | float | str):
            value = self._lookup.get(_mapping_key(value), value)
        return self._typed(value)

    def _typed(self, value: object) -> str:
        classes = self.type
        if value is None:
            raise LabelMismatch("null is not a class")
        if classes == "boolean":
            if isinstance(value, bool):
                return "true" if value else "false"
            raise LabelMismatch(f"{show(value)} is not a boolean")
        if classes == "integer":
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
            if isinstance(value, float) and value.is_integer():
                return str(int(value))
            raise LabelMismatch(f"{show(value)} is not an integer")
        if classes == "string":
            if isinstance(value, str):
                return value
            raise LabelMismatch(f"{show(value)} is not a string")
        # auto: lenient, never refuses; the same value written as bool, number or numeric
        # string compares equal.
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            return _number_key(value)
        text = str(value)
        try:
            number = float(text)
        except ValueError:
            return text
        return _number_key(number) if math.isfinite(number) else text

    def agrees(self, prediction: str, label: str) -> bool:
        """Whether a prediction's key counts as correct for a label's key."""
        if self.kind != "regression":
            return prediction == label
        try:
            distance = abs(float(prediction) - float(label))
        except ValueError:  # a key stored under another target: not comparable
            return False
        return distance <= (self.tolerance or 0.0)

    def correct(self, predictions: Iterable[str], labels: Iterable[str]) -> int:
        """How many (prediction key, label key) pairs agree."""
        return sum(self.agrees(p, y) for p, y in zip(predictions, labels, strict=True))

    def accuracy(self, predictions: Iterable[Any], labels: Iterable[Any]) -> float | None:
        """Share of predictions that agree with their labels (raw values; None when empty);
        ``LabelMismatch`` when a value does not fit."""
        keys = [(self.key(p), self.key(y)) for p, y in zip(predictions, labels, strict=True)]
        if not keys:
            return None
        return self.correct((p for p, _ in keys), (y for _, y in keys)) / len(keys)


DEFAULT_TARGET = Target()
"""What a model that declares no target gets: classification, ``type: auto``."""
