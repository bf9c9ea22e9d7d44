"""Batch files: where a DataArrived URI points on this host, its digest, and reading it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd  # type: ignore[import-untyped]

_CHUNK = 1 << 20


class BatchError(Exception):
    """A batch cannot be used: unreachable, wrong digest, unreadable or unknown format."""


def local_path(uri: str) -> Path | None:
    """The local file a URI names (``file://`` or a plain path); None for remote schemes."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return None
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and uri[1:3] in (":\\", ":/")):
        return Path(uri)
    return None


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def reachable_sha256(uri: str) -> str | None:
    """The digest of the file behind ``uri`` when it is a local file that exists, else None."""
    path = local_path(uri)
    if path is None or not path.is_file():
        return None
    return file_sha256(path)


def batch_format(uri: str, declared: str | None) -> str:
    """'csv' or 'parquet', from the declared format or the file name."""
    fmt = (declared or "").lower()
    if not fmt:
        name = (local_path(uri) or Path(urlparse(uri).path)).name.lower()
        if name.endswith((".parquet", ".pq")):
            fmt = "parquet"
        elif name.endswith((".csv", ".csv.gz")):
            fmt = "csv"
    if fmt not in ("csv", "parquet"):
        raise BatchError(f"{uri}: unsupported format {fmt or '(unknown)'!r}; use csv or parquet")
    return fmt


def load_batch(uri: str, sha256: str, declared_format: str | None) -> Any:
    """Read a batch into a DataFrame after checking its digest against the ledger's."""
    path = local_path(uri)
    if path is None:
        raise BatchError(f"{uri}: only local paths and file:// URIs can be read by this trainer")
    if not path.is_file():
        raise BatchError(f"{uri}: file not found")
    actual = file_sha256(path)
    if actual != sha256:
        raise BatchError(f"{uri}: sha256 mismatch: ledger has {sha256}, file has {actual}")
    fmt = batch_format(uri, declared_format)
    try:
        if fmt == "csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as exc:
        raise BatchError(f"{uri}: cannot read as {fmt}: {exc}") from exc
