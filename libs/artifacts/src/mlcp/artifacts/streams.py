"""Streams under budget: inflating compressed layers and archive members chunk by chunk, counting
every inflated byte against the scan's budget and ratio, keeping the last bytes seen.

Nothing here ever holds more than one chunk of a stream: a bomb is stopped by arithmetic, not by
running out of memory.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Callable
from typing import IO, Protocol, cast

from mlcp.artifacts.findings import Finding
from mlcp.artifacts.limits import RATIO_FLOOR_BYTES, ArtifactLimits, human_bytes

CHUNK = 64 * 1024
TAIL = 64 * 1024 + 22
"""Enough of a stream's end to find a zip's end-of-central-directory record (22 bytes plus a
comment of at most 64 KiB)."""


class Readable(Protocol):
    """Anything with ``read(n)``: files, archive members, decompressors, buffered readers."""

    def read(self, size: int = ..., /) -> bytes | None: ...


class Abort(Exception):
    """A limit was hit: the scan stops at once with this finding (reading on would cost what the
    limit is there to prevent)."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(str(finding))
        self.finding = finding


class Budget:
    """Inflated bytes left for one whole scan (every layer and member, nested ones included)."""

    def __init__(self, limits: ArtifactLimits) -> None:
        self.limits = limits
        self.left = limits.max_decompressed_bytes

    def take(self, n: int, where: str) -> None:
        """Count ``n`` inflated bytes; ``Abort`` once the total passes the limit."""
        self.left -= n
        if self.left < 0:
            limit = human_bytes(self.limits.max_decompressed_bytes)
            raise Abort(
                Finding(
                    "decompressed_budget",
                    f"inflates past the limit of {limit} (MLCP_ARTIFACT_MAX_DECOMPRESSED_BYTES):"
                    " nothing past it is read, so nothing past it can be vouched for",
                    where,
                )
            )


class Metered(io.RawIOBase):
    """A readable stream that counts what passes through it.

    With a budget, every byte is inflated output: it is charged to the budget, and the ratio of
    bytes out to ``compressed()`` bytes in is held to ``max_ratio``. Always keeps the last
    ``TAIL`` bytes read (``tail``) and the total (``count``).
    """

    def __init__(
        self,
        source: Readable,
        where: str,
        budget: Budget | None = None,
        compressed: Callable[[], int] | None = None,
    ) -> None:
        self._source = source
        self._where = where
        self._budget = budget
        self._compressed = compressed
        self.count = 0
        self.tail = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._source.read(min(len(buffer), CHUNK)) or b""
        n = len(data)
        if not n:
            return 0
        buffer[:n] = data
        self.count += n
        self.tail = (self.tail + data)[-TAIL:]
        if self._budget is not None:
            self._budget.take(n, self._where)
            self._check_ratio()
        return n

    def _check_ratio(self) -> None:
        if self._compressed is None or self.count <= RATIO_FLOOR_BYTES or self._budget is None:
            return
        limit = self._budget.limits.max_ratio
        compressed = max(self._compressed(), 1)
        if self.count > limit * compressed:
            raise Abort(
                Finding(
                    "ratio",
                    f"inflates {self.count // compressed}× its compressed size after "
                    f"{human_bytes(self.count)}, over the limit of {limit:g}× "
                    "(MLCP_ARTIFACT_MAX_RATIO): a decompression bomb",
                    self._where,
                )
            )


class Counting(io.RawIOBase):
    """Counts the compressed bytes a decompressor pulls from ``source``."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._source.read(len(buffer)) or b""
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


class _ZlibReader(io.RawIOBase):
    """A raw zlib stream (joblib's ``zlib`` compressor), inflated at most one buffer at a time."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._inflater = zlib.decompressobj()
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._inflater.eof:
            data = self._pending or self._source.read(CHUNK) or b""
            if not data:
                raise EOFError("the zlib stream ends before its end marker")
            out = self._inflater.decompress(data, len(buffer))
            self._pending = self._inflater.unconsumed_tail
            if out:
                buffer[: len(out)] = out
                return len(out)
        return 0


# Decompressors are closed with the stream they read from (the scan's file or member).
COMPRESSIONS: dict[str, Callable[[Counting], Readable]] = {
    "gzip": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    "bz2": lambda raw: bz2.BZ2File(raw, mode="rb"),
    "xz": lambda raw: lzma.LZMAFile(cast(IO[bytes], raw), mode="rb"),  # noqa: SIM115
    "lzma": lambda raw: lzma.LZMAFile(  # noqa: SIM115
        cast(IO[bytes], raw), mode="rb", format=lzma.FORMAT_ALONE
    ),
    "zlib": lambda raw: _ZlibReader(raw),
}
"""The compressed layers joblib writes (and any file may be wrapped in), by name."""

DECOMPRESSION_ERRORS = (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError)


def sniff(head: bytes) -> str | None:
    """What ``head`` (a stream's first bytes) starts: 'zip', a compression, 'npy', or None."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"]\x00\x00"):
        return "lzma"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
        return "zlib"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    return None


def inflating(kind: str, source: Readable) -> tuple[Readable, Counting]:
    """The inflated stream of ``source`` and the counter of compressed bytes it consumed."""
    counting = Counting(source)
    return COMPRESSIONS[kind](counting), counting


def buffered(raw: io.RawIOBase) -> io.BufferedReader:
    """A buffered reader over ``raw`` (``peek``, ``readline`` with a limit)."""
    return io.BufferedReader(raw, CHUNK)


def drain(stream: Readable) -> None:
    """Read ``stream`` to its end in chunks (so that its budget and tail see every byte)."""
    while stream.read(CHUNK):
        pass


def zip_end_in(tail: bytes) -> bool:
    """Whether ``tail`` ends with a zip end-of-central-directory record (as ``zipfile`` finds
    one: the signature, 22 bytes, then exactly its comment up to the end)."""
    at = tail.rfind(b"PK\x05\x06")
    while at >= 0:
        if len(tail) - at >= 22:
            comment = int.from_bytes(tail[at + 20 : at + 22], "little")
            if at + 22 + comment == len(tail):
                return True
        at = tail.rfind(b"PK\x05\x06", 0, at)
    return False
