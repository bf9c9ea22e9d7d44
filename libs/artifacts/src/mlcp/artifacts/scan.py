"""The scan the gatekeeper's ``security_scan`` stage runs: fetch and verify, then scan — never
load. ``verified`` is the part the restricted loader shares."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlcp.artifacts.fetch import fetch_verified
from mlcp.artifacts.findings import ArtifactRefused, Finding, ordered
from mlcp.artifacts.limits import ArtifactLimits
from mlcp.artifacts.policy import ArtifactPolicy
from mlcp.artifacts.scanner import Scanned, scan_file
from mlcp.artifacts.store import ArtifactStore


@dataclass(frozen=True)
class ScanResult:
    """The verdict on one artifact."""

    sha256: str | None
    """Digest of the bytes read; None when nothing was read (refused before)."""
    findings: tuple[Finding, ...]
    """Why it is refused, most serious first; empty: it passes."""
    scanners: tuple[str, ...]
    """Who looked: 'allow-list' always, 'picklescan' / 'skops' as second opinions."""
    kinds: tuple[str, ...] = ()
    """What the content turned out to be ('skops', 'zip', 'pickle', 'gzip', 'npy', 'data')."""

    @property
    def passed(self) -> bool:
        """No finding."""
        return not self.findings

    @property
    def names(self) -> tuple[str, ...]:
        """The offending globals and types, in finding order, each once."""
        return tuple(dict.fromkeys(f.name for f in self.findings if f.name is not None))

    @property
    def reason(self) -> str:
        """Every finding in one line, most serious first (empty when it passes)."""
        return "; ".join(str(f) for f in self.findings)


@dataclass(frozen=True)
class Verified:
    """A private, sha256-verified copy of an artifact, and what the scan found in it."""

    path: Path
    name: str
    scanned: Scanned


@contextmanager
def verified(
    uri: str,
    sha256: str,
    fmt: str,
    store: ArtifactStore,
    policy: ArtifactPolicy,
    limits: ArtifactLimits,
) -> Iterator[Verified]:
    """Fetch ``uri`` into a private copy (deleted on exit), check its digest, scan the copy.
    ``ArtifactRefused`` when it cannot be fetched or its digest differs."""
    with tempfile.TemporaryDirectory(prefix="mlcp-artifact-") as work:
        copy, name = fetch_verified(store, uri, sha256, limits, Path(work))
        yield Verified(copy, name, scan_file(copy, fmt, policy, limits, name))


def scan_artifact(
    uri: str,
    sha256: str,
    fmt: str,
    *,
    store: ArtifactStore,
    policy: ArtifactPolicy | None = None,
    limits: ArtifactLimits | None = None,
) -> ScanResult:
    """Verify and scan the artifact at ``uri`` (blocking: run it in a thread)."""
    try:
        with verified(
            uri, sha256, fmt, store, policy or ArtifactPolicy(), limits or ArtifactLimits()
        ) as found:
            scanned = found.scanned
    except ArtifactRefused as refused:
        return ScanResult(refused.actual_sha256, refused.findings, ("sha256",))
    return ScanResult(
        sha256,
        ordered(scanned.findings),
        tuple(sorted(scanned.scanners)),
        tuple(sorted(scanned.kinds)),
    )
