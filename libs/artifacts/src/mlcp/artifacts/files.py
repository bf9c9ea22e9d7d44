"""Local files behind URIs: the one URI → path rule and the one file sha256.

Data batches and artifacts are announced by URI (``file://…``, a plain path, ``s3://…``) with
the sha256 of their bytes. Every component that reads a local one — the trainer, the CLI's
``emit``, the artifact store — maps the URI and hashes the file the same way through here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import unquote, urlparse

_CHUNK = 1 << 20


def local_path(uri: str) -> Path | None:
    """The local file a URI names: ``file://[localhost]/…`` or a plain path (``~`` expanded).

    None for a remote scheme (``s3://…``) or a ``file://`` URI on another host.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return None
        return Path(unquote(parsed.path))
    # A one-letter scheme followed by :\ or :/ is a Windows drive, i.e. a plain path.
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and uri[1:3] in (":\\", ":/")):
        return Path(uri).expanduser()
    return None


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
