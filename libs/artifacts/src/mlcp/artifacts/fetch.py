"""Fetch an artifact into a private file, hashing it on the way: the bytes that were verified
are the bytes that get scanned and loaded, whatever happens to the store meanwhile."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mlcp.artifacts.findings import ArtifactRefused, Finding
from mlcp.artifacts.limits import ArtifactLimits, human_bytes
from mlcp.artifacts.store import ArtifactStore

_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)


def fetch_verified(
    store: ArtifactStore, uri: str, sha256: str, limits: ArtifactLimits, into: Path
) -> tuple[Path, str]:
    """Copy ``uri`` into the directory ``into`` (streamed, at most ``max_bytes``) and check its
    sha256; returns the copy and a short name for messages. ``ArtifactRefused`` otherwise."""
    with store.open(uri) as stored:
        name = stored.name
        if stored.size > limits.max_bytes:
            raise _too_large(stored.size, limits, name)
        digest = hashlib.sha256()
        total = 0
        copy = into / "artifact"
        with copy.open("wb") as out:
            while chunk := stored.stream.read(_CHUNK):
                total += len(chunk)
                if total > limits.max_bytes:  # it grew while being read
                    raise _too_large(total, limits, name)
                digest.update(chunk)
                if chunk == _ZEROS:
                    out.seek(len(chunk), 1)  # keep a sparse file sparse
                else:
                    out.write(chunk)
            out.truncate(total)
    actual = digest.hexdigest()
    if actual != sha256:
        raise ArtifactRefused(
            (
                Finding(
                    "digest_mismatch",
                    f"sha256 {actual} differs from the registered {sha256}",
                    name,
                ),
            ),
            actual_sha256=actual,
        )
    return copy, name


def _too_large(size: int, limits: ArtifactLimits, name: str) -> ArtifactRefused:
    return ArtifactRefused(
        (
            Finding(
                "too_large",
                f"the artifact is {human_bytes(size)}, over the limit of "
                f"{human_bytes(limits.max_bytes)} (MLCP_ARTIFACT_MAX_BYTES); it is not read",
                name,
            ),
        )
    )
