"""The security_scan stage's view of ``mlcp.artifacts``: its verdict as a ``ScanReport``.

The scan itself — fetch inside ``MLCP_ARTIFACT_ROOT``, streamed sha256 under a byte budget, the
exact allow-list over pickle streams and skops archives, containers opened under the same
budgets, picklescan and skops as second opinions — lives in ``mlcp.artifacts`` and is shared
with every loader. The gatekeeper never loads an artifact.
"""

from __future__ import annotations

import logging

from mlcp.artifacts import ArtifactLimits, ArtifactPolicy, ArtifactStore, scan_artifact
from mlcp.contracts import ArtifactRef
from mlcp.gatekeeper.domain import ScanReport

log = logging.getLogger(__name__)


def scan(
    artifact: ArtifactRef, store: ArtifactStore, policy: ArtifactPolicy, limits: ArtifactLimits
) -> ScanReport:
    """Verify and scan ``artifact`` (blocking: run it in a thread)."""
    expected = artifact.sha256
    try:
        result = scan_artifact(
            artifact.uri, expected, artifact.format, store=store, policy=policy, limits=limits
        )
    except Exception as exc:  # a scanner crash on hostile input fails the stage, never retries
        log.warning("scan of %s failed: %s", artifact.uri, exc)
        return ScanReport(expected, None, "mlcp.artifacts", error=f"scan failed: {exc}")
    scanner = "+".join(result.scanners)
    if result.sha256 is None or result.sha256 != expected:
        # Not read, or not what was registered: the domain words the digest evidence.
        return ScanReport(expected, result.sha256, scanner, error=result.reason or None)
    return ScanReport(
        expected, result.sha256, scanner, unsafe=result.names, error=result.reason or None
    )


def warm_up() -> None:
    """Import skops (and with it scikit-learn) and picklescan: seconds of CPU that the first
    security_scan would otherwise pay while a candidate waits. Run in a thread at start."""
    import picklescan.scanner  # type: ignore[import-untyped]  # noqa: F401
    import skops.io  # type: ignore[import-untyped]  # noqa: F401
