"""Where an artifact's bytes come from: a URI → a stream, confined to the artifact root.

``FileStore`` serves ``file://`` URIs and paths relative to its root. Another store (S3 …) plugs
in with ``register_store``: it only has to open a URI as a stream of known size; verification
and scanning never depend on where the bytes came from.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlparse

from mlcp.artifacts.findings import ArtifactRefused, Cause, Finding


@dataclass(frozen=True)
class Stored:
    """An artifact opened for reading."""

    stream: BinaryIO
    size: int
    name: str
    """A short name for messages: the file's base name."""


class ArtifactStore(Protocol):
    """Opens artifacts by URI; refuses what it must not serve (``ArtifactRefused``)."""

    def open(self, uri: str) -> AbstractContextManager[Stored]:
        """A context manager yielding the artifact's stream and size."""
        ...


def refused(cause: Cause, message: str, where: str) -> ArtifactRefused:
    """An ``ArtifactRefused`` with one finding."""
    return ArtifactRefused((Finding(cause, message, where),))


class FileStore:
    """Artifacts on a local (or mounted) file system, under ``root``.

    A URI is refused unread when it is another scheme or host, leaves the root (``../``, an
    absolute path elsewhere), passes through a symbolic link, or is not a regular file (a FIFO
    would block the reader, a device would never end).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(Path(root).expanduser()))

    def path(self, uri: str) -> Path:
        """The file ``uri`` names, checked to be inside the root with no link on the way."""
        name = os.path.basename(urlparse(uri).path) or uri
        parsed = urlparse(uri)
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise refused("unreadable", f"file URI on another host ({parsed.netloc})", name)
            candidate = Path(unquote(parsed.path))
        elif parsed.scheme == "":
            candidate = Path(uri) if uri.startswith("/") else self.root / uri
        else:
            raise refused(
                "unreadable", f"scheme {parsed.scheme}:// is not served by the file store", name
            )
        lexical = Path(os.path.normpath(candidate))
        if not lexical.is_relative_to(self.root):
            raise refused(
                "outside_root", f"{lexical} is outside the artifact root {self.root}", name
            )
        # Compare with the fully resolved path: any symbolic link below the root (the file or a
        # directory on the way) makes them differ, wherever it points.
        if Path(os.path.realpath(lexical)) != lexical:
            raise refused("symlink", f"{lexical} passes through a symbolic link", name)
        return lexical

    @contextmanager
    def open(self, uri: str) -> Iterator[Stored]:
        """Open ``uri`` read-only, never following a link, refusing anything but a file."""
        path = self.path(uri)
        try:
            # O_NOFOLLOW: a link swapped in after the check is refused by the kernel;
            # O_NONBLOCK: opening a FIFO does not wait for a writer (it is refused below).
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            cause: Cause = "symlink" if exc.errno == 40 else "unreadable"  # 40: ELOOP
            raise refused(cause, f"cannot open {path}: {exc.strerror}", path.name) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise refused("unreadable", f"{path} is not a regular file", path.name)
            os.set_blocking(fd, True)
            stream = os.fdopen(fd, "rb", buffering=0)
        except BaseException:
            os.close(fd)
            raise
        with stream:
            yield Stored(stream, info.st_size, path.name)


StoreFactory = Callable[[str], ArtifactStore]
_STORES: dict[str, StoreFactory] = {}


def register_store(scheme: str, factory: StoreFactory) -> None:
    """Serve artifact roots of ``scheme`` (e.g. ``s3``) with ``factory(root_uri)``."""
    _STORES[scheme] = factory


def open_store(root: str | Path) -> ArtifactStore:
    """The store of an artifact root: a path or ``file://`` URI, or a registered scheme."""
    text = str(root)
    scheme = urlparse(text).scheme if "://" in text else ""
    if scheme in ("", "file"):
        path = Path(unquote(urlparse(text).path)) if scheme == "file" else Path(text)
        return FileStore(path)
    if scheme in _STORES:
        return _STORES[scheme](text)
    raise ValueError(f"artifact root {text!r}: no store for {scheme}:// (known: file)")
