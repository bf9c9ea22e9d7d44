"""The security scan of an artifact: re-hash it, then look for unsafe content WITHOUT loading it.

* The file must be under ``MLCP_ARTIFACT_ROOT`` (a ``file://`` URI or a path relative to the
  root); anything else (another scheme, a path escaping the root) is refused unread.
* skops files: ``skops.io.get_untrusted_types`` reads the archive's schema only; any type outside
  skops' defaults and the stage's ``trusted`` list fails the stage.
* Everything else that is (or decompresses to) a pickle stream — pickle and joblib artifacts,
  or a file of any declared format that starts like a pickle — is disassembled by picklescan:
  a global picklescan calls dangerous fails, and so does one from a module outside
  ``TRUSTED_MODULES`` + ``trusted``. A stream picklescan cannot parse to its end fails too
  (fail closed): uncompressed joblib files embed raw numpy buffers that stop the disassembly,
  and whatever follows them would go unchecked — save models with skops instead.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import logging
import lzma
import zlib
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from picklescan.scanner import (  # type: ignore[import-untyped]
    SafetyLevel,
    scan_pickle_bytes,
)

from mlcp.contracts import ArtifactRef
from mlcp.gatekeeper.domain import ScanReport

log = logging.getLogger(__name__)

TRUSTED_MODULES = ("sklearn", "numpy", "scipy", "joblib", "pandas", "collections")
"""Top-level modules whose globals a pickle-based model may reference."""

PICKLE_FORMATS = frozenset({"pickle", "pkl", "joblib", "cloudpickle", "dill"})
MAX_DECOMPRESSED_BYTES = 2 * 1024**3
_CHUNK = 1024 * 1024


class ArtifactError(Exception):
    """The artifact cannot be read (where it is, or what it is)."""


def resolve(uri: str, root: Path) -> Path:
    """The local file of ``uri``: ``file://`` or a relative path, always inside ``root``."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ArtifactError(f"file URI on another host ({parsed.netloc}) is not readable")
        candidate = Path(unquote(parsed.path))
    elif parsed.scheme == "" and not uri.startswith("/"):
        candidate = root / uri
    elif parsed.scheme == "":
        candidate = Path(uri)
    else:
        raise ArtifactError(f"scheme {parsed.scheme}:// is not supported (file:// only)")
    real_root = root.expanduser().resolve()
    path = candidate.expanduser().resolve()
    if not path.is_relative_to(real_root):
        raise ArtifactError(f"{path} is outside MLCP_ARTIFACT_ROOT ({real_root})")
    return path


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def scan_artifact(artifact: ArtifactRef, root: Path, trusted: Sequence[str] = ()) -> ScanReport:
    """Hash and scan ``artifact`` (blocking: run it in a thread)."""
    expected = artifact.sha256
    try:
        path = resolve(artifact.uri, root)
        actual = sha256_of(path)
    except (ArtifactError, OSError) as exc:
        error = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return ScanReport(expected, None, "none", error=error)
    if actual != expected:
        # Whatever the file holds, it is not what was registered: no need to look inside.
        return ScanReport(expected, actual, "none")
    try:
        if artifact.format == "skops":
            return _scan_skops(path, expected, trusted)
        return _scan_pickle(path, artifact.format, expected, trusted)
    except Exception as exc:  # a scanner crash on hostile input must fail the stage, not retry
        log.warning("scan of %s failed: %s", artifact.uri, exc)
        return ScanReport(expected, actual, "scanner", error=f"scan failed: {exc}")


def warm_up() -> None:
    """Import the skops scanner (and with it scikit-learn): seconds of CPU that the first
    security_scan would otherwise pay while a candidate waits. Run in a thread at start."""
    import skops.io  # type: ignore[import-untyped]  # noqa: F401


def _scan_skops(path: Path, sha: str, trusted: Sequence[str]) -> ScanReport:
    from skops.io import get_untrusted_types

    untrusted = get_untrusted_types(file=path)
    unsafe = tuple(t for t in untrusted if not _trusted(t, trusted))
    return ScanReport(sha, sha, "skops", unsafe=unsafe)


def _scan_pickle(path: Path, fmt: str, sha: str, trusted: Sequence[str]) -> ScanReport:
    declared = fmt in PICKLE_FORMATS
    raw = path.read_bytes()
    try:
        data = _decompressed(raw)
    except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
        if declared:
            return ScanReport(sha, sha, "picklescan", error=f"cannot decompress: {exc}")
        data = raw
    if declared and not data.startswith(b"\x80"):
        return ScanReport(sha, sha, "picklescan", error="not a pickle stream (protocol >= 2)")
    # Other formats (onnx …) are scanned too, in case a pickle hides behind the wrong label;
    # for them only what picklescan finds counts, not its failure to parse a non-pickle.
    result = scan_pickle_bytes(io.BytesIO(data), path.name, multiple_pickles=True)
    allowed = (*TRUSTED_MODULES, *trusted)
    unsafe = tuple(
        sorted(
            {
                f"{g.module}.{g.name}"
                for g in result.globals
                if g.safety is SafetyLevel.Dangerous
                or (
                    g.safety is SafetyLevel.Suspicious
                    and not _trusted(f"{g.module}.{g.name}", allowed)
                )
            }
        )
    )
    if not declared and not result.globals:
        return ScanReport(sha, sha, "none")
    error = "the pickle stream could not be parsed to its end" if result.scan_err else None
    return ScanReport(sha, sha, "picklescan", unsafe=unsafe, error=error)


def _trusted(qualified: str, trusted: Sequence[str]) -> bool:
    return any(qualified == t or qualified.startswith(f"{t}.") for t in trusted)


def _decompressed(data: bytes) -> bytes:
    """joblib's compressed files (zlib, gzip, bz2, xz, lzma) as the pickle stream inside."""
    if data.startswith(b"\x78"):
        out = zlib.decompressobj().decompress(data, MAX_DECOMPRESSED_BYTES)
    elif data.startswith(b"\x1f\x8b"):
        out = gzip.GzipFile(fileobj=io.BytesIO(data)).read(MAX_DECOMPRESSED_BYTES)
    elif data.startswith(b"BZh"):
        out = bz2.BZ2Decompressor().decompress(data, MAX_DECOMPRESSED_BYTES)
    elif data.startswith((b"\xfd7zXZ", b"]\x00\x00")):
        out = lzma.LZMADecompressor().decompress(data, MAX_DECOMPRESSED_BYTES)
    else:
        return data
    return out
