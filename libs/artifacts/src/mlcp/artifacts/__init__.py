"""mlcp.artifacts — the one way mlcp reads model artifacts.

``scan_artifact`` (the gatekeeper's security_scan) and ``load_artifact`` (the trainer's baseline,
inference services) share everything: a store that serves URIs under the artifact root, a
streamed sha256 check under a byte budget, and a scanner that decides pickle streams and skops
archives against one exact allow-list, opening containers under the same budgets.
See docs/security.md for the threat model.
"""

from mlcp.artifacts.allowlist import PICKLE_GLOBALS, SKOPS_TYPES
from mlcp.artifacts.findings import ArtifactRefused, Finding
from mlcp.artifacts.limits import ArtifactLimits
from mlcp.artifacts.loader import load_artifact
from mlcp.artifacts.pickles import RestrictedUnpickler
from mlcp.artifacts.policy import ArtifactPolicy, parse_trusted
from mlcp.artifacts.scan import ScanResult, scan_artifact
from mlcp.artifacts.scanner import PICKLE_FORMATS, SKOPS_FORMAT
from mlcp.artifacts.store import ArtifactStore, FileStore, open_store, register_store

__all__ = [
    "PICKLE_FORMATS",
    "PICKLE_GLOBALS",
    "SKOPS_FORMAT",
    "SKOPS_TYPES",
    "ArtifactLimits",
    "ArtifactPolicy",
    "ArtifactRefused",
    "ArtifactStore",
    "FileStore",
    "Finding",
    "RestrictedUnpickler",
    "ScanResult",
    "load_artifact",
    "open_store",
    "parse_trusted",
    "register_store",
    "scan_artifact",
]
