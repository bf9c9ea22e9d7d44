"""How much work one artifact may cost: bytes read, bytes inflated, inflation ratio, nesting.

Every read of an artifact is streamed against these budgets, so the memory a scan or a load
needs does not grow with the input: an artifact over a limit is refused, never read whole.
Each limit is an environment variable (the same in every service, the CLI and the client).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

RATIO_FLOOR_BYTES = 1 * MiB
"""A stream is held to ``max_ratio`` once it has inflated past this: a few hundred KiB of zeros
compress a thousandfold and harm nobody."""

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_UNIT = {None: 1, "B": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB}


@dataclass(frozen=True)
class ArtifactLimits:
    """Budgets of one scan or load (defaults are safe for scikit-learn-sized models)."""

    max_bytes: int = 512 * MiB
    """``MLCP_ARTIFACT_MAX_BYTES``: size of the artifact file itself; larger ones are refused
    unread."""
    max_decompressed_bytes: int = 1 * GiB
    """``MLCP_ARTIFACT_MAX_DECOMPRESSED_BYTES``: bytes inflated from every compressed stream and
    archive member of one artifact, nested ones included, taken together."""
    max_ratio: float = 100.0
    """``MLCP_ARTIFACT_MAX_RATIO``: inflated / compressed bytes of any one stream or member."""
    max_depth: int = 3
    """``MLCP_ARTIFACT_MAX_DEPTH``: containers inside containers (a zip in a zip, a gzip in a
    zip …)."""
    max_members: int = 10_000
    """``MLCP_ARTIFACT_MAX_MEMBERS``: members of one archive."""
    max_pickle_opcodes: int = 200_000
    """``MLCP_ARTIFACT_MAX_PICKLE_OPCODES``: opcodes of one pickle stream (a scikit-learn model
    has a few thousand)."""
    max_schema_bytes: int = 16 * MiB
    """``MLCP_ARTIFACT_MAX_SCHEMA_BYTES``: a skops archive's ``schema.json``, parsed in memory."""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{field.name} must be a positive number, not {value!r}")
        if self.max_ratio < 1:
            raise ValueError(f"max_ratio must be at least 1, not {self.max_ratio!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ArtifactLimits:
        """The limits set by ``MLCP_ARTIFACT_*`` variables (sizes in bytes, or with KiB/MiB/GiB);
        ``ValueError`` names the variable of a bad value."""
        env = os.environ if environ is None else environ
        values: dict[str, int | float] = {}
        for field in fields(cls):
            name = f"MLCP_ARTIFACT_{field.name.upper()}"
            raw = env.get(name, "").strip()
            if not raw:
                continue
            try:
                values[field.name] = _ratio(raw) if field.name == "max_ratio" else _size(raw)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc} (got {raw!r})") from None
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"MLCP_ARTIFACT_*: {exc}") from None


def _size(raw: str) -> int:
    match = _SIZE.match(raw)
    if match is None:
        raise ValueError("not a size like 536870912, 512MiB or 1GiB")
    return int(match.group(1)) * _UNIT[match.group(2)]


def _ratio(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError("not a number") from None


def human_bytes(n: int) -> str:
    """``536870912`` → ``512 MiB`` (exact units only; else the plain number of bytes)."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"
