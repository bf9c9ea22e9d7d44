"""Which version answers a request: the canary its traffic percent, sticky by the caller's key.

Pure: no I/O. A key is hashed (BLAKE2b, stable across processes, machines and Python versions,
unlike ``hash()``) into one of 10,000 buckets; the canary takes the buckets below its percent.
So the same key meets the same version while the split is unchanged, and raising the percent
only moves keys from production to the canary, never back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Generic, TypeVar

BUCKETS = 10_000
"""Routing resolution: 0.01 percentage point."""

T = TypeVar("T")


def bucket(key: str) -> int:
    """The key's bucket in ``[0, BUCKETS)``: the same for the same key everywhere."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True)
class Split(Generic[T]):
    """Production and canary (either may be missing) and the canary's share of traffic."""

    production: T | None
    canary: T | None
    canary_percent: float

    def route(self, key: str) -> tuple[str, T]:
        """(alias, what serves it) for ``key``; ``LookupError`` when nothing serves."""
        if self.canary is not None and (
            self.production is None or bucket(key) < self.canary_percent * (BUCKETS / 100)
        ):
            return "canary", self.canary
        if self.production is not None:
            return "production", self.production
        raise LookupError("no version serves: neither production nor canary is set")
