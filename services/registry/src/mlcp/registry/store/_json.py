"""JSON columns: encoded on the way in, decoded on the way out."""

from __future__ import annotations

import json
from typing import Any

JSON_COLUMNS = (
    "metrics",
    "params",
    "baseline",
    "datasets",
    "feature_schema",
    "reference_profile",
    "environment",
    "before",
    "after",
)


def dump(value: Any) -> str | None:
    """A value as JSON text for a jsonb parameter (None stays NULL)."""
    return None if value is None else json.dumps(value)


def row(record: Any) -> dict[str, Any]:
    """A record as a dict, its JSON columns decoded."""
    out = dict(record)
    for name in JSON_COLUMNS:
        if isinstance(out.get(name), str):
            out[name] = json.loads(out[name])
    return out
