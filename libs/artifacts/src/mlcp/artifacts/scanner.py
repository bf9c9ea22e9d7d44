"""The scan of one local file: what each stream is decides how it is read, whatever its label.

Every stream — the file, a compressed layer, an archive member, a member of a member — is
recognised by its first bytes and scanned by the same rules:

* zip archive → each member opened (under the declared-size, ratio and budget checks) and
  scanned in turn; an archive with ``schema.json`` is also audited as skops;
* gzip / bz2 / xz / lzma / zlib → inflated under the budget and ratio, then scanned;
* ``.npy`` → the header: object arrays need pickle and are refused;
* a pickle (a declared pickle format, a protocol ≥ 2 header, or any stream that parses as
  opcodes up to one that imports something) → the opcode scan of ``mlcp.artifacts.pickles``;
* anything else is data (ONNX, JSON, text): read to its end, and refused if it ends with a zip
  archive hidden behind other bytes.

Containers nest at most ``max_depth`` deep; all inflated bytes share one budget.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from mlcp.artifacts.findings import Cause, Finding
from mlcp.artifacts.limits import RATIO_FLOOR_BYTES, ArtifactLimits, human_bytes
from mlcp.artifacts.pickles import PickleScan, second_opinion
from mlcp.artifacts.policy import ArtifactPolicy
from mlcp.artifacts.skops_audit import SCHEMA, audit_schema, check_npy, read_schema
from mlcp.artifacts.streams import (
    CHUNK,
    DECOMPRESSION_ERRORS,
    TAIL,
    Abort,
    Budget,
    Metered,
    Readable,
    buffered,
    drain,
    inflating,
    sniff,
    zip_end_in,
)

PICKLE_FORMATS = frozenset({"pickle", "pkl", "joblib", "cloudpickle", "dill"})
"""Declared formats that are pickle streams (possibly compressed)."""
SKOPS_FORMAT = "skops"


@dataclass
class Scanned:
    """What a scan found, and which scanners looked."""

    findings: list[Finding] = field(default_factory=list)
    scanners: set[str] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)
    """What was recognised: 'zip', 'skops', 'gzip', 'pickle', 'npy', 'data' …"""


class _Scan:
    def __init__(
        self, policy: ArtifactPolicy, limits: ArtifactLimits, workdir: Path, declared: str
    ) -> None:
        self.policy = policy
        self.limits = limits
        self.workdir = workdir
        self.declared = declared
        self.budget = Budget(limits)
        self.out = Scanned(scanners={"allow-list"})

    def add(self, cause: Cause, message: str, where: str, name: str | None = None) -> None:
        finding = Finding(cause, message, where, name)
        if finding not in self.out.findings:
            self.out.findings.append(finding)

    # -- one stream -------------------------------------------------------------------------------
    def stream(
        self,
        source: Readable,
        where: str,
        depth: int,
        *,
        path: Path | None = None,
        expect_pickle: bool = False,
    ) -> None:
        """Scan one stream. ``path``: the stream is that whole file (archives open in place);
        ``expect_pickle``: its declared format is a pickle one, so it must be a pickle."""
        meter = source if isinstance(source, Metered) else Metered(source, where)
        reader = buffered(meter)
        kind = sniff(reader.peek(8)[:8])
        if kind in ("gzip", "bz2", "xz", "lzma", "zlib"):
            self.out.kinds.add(kind)
            self._nest(depth, where)
            inner, counting = inflating(kind, reader)
            layer = f"{where}[{kind}]"
            try:
                metered = Metered(inner, layer, self.budget, lambda: counting.count)
                self.stream(metered, layer, depth + 1, expect_pickle=expect_pickle)
            except DECOMPRESSION_ERRORS as exc:
                self.add("malformed", f"the {kind} stream cannot be inflated: {exc}", layer)
            return
        if kind is None:
            self._pickle_or_data(reader, meter, where, path, strict=expect_pickle)
            return
        self.out.kinds.add(kind)
        if expect_pickle:
            self.add("format", f"declared {self.declared}, but this is a {kind} file", where)
        if kind == "zip":
            self._nest(depth, where)
            self._zip(reader, where, depth + 1, path)
        else:
            for finding in check_npy(reader, where):
                self.add(finding.cause, finding.message, where, finding.name)
            self._data(reader, meter, where, path)

    def _pickle_or_data(
        self,
        reader: io.BufferedReader,
        meter: Metered,
        where: str,
        path: Path | None,
        *,
        strict: bool,
    ) -> None:
        with tempfile.SpooledTemporaryFile(max_size=1 << 20, dir=str(self.workdir)) as skeleton:
            scan = PickleScan(reader, where, self.policy, self.limits, self.out.findings, skeleton)
            if scan.run(strict=strict):
                self.out.kinds.add("pickle")
                if scan.complete:
                    self.out.scanners.add("picklescan")
                    second_opinion(skeleton, where, self.out.findings)
                return
        self._data(reader, meter, where, path)

    def _data(self, reader: Readable, meter: Metered, where: str, path: Path | None) -> None:
        """The rest is data; a zip archive at its end (where zip readers look) is hidden there."""
        self.out.kinds.add("data")
        if path is not None:
            with path.open("rb") as whole:  # the file itself: its end, without reading it all
                whole.seek(max(0, path.stat().st_size - TAIL))
                tail = whole.read()
        else:
            drain(reader)
            tail = meter.tail
        if zip_end_in(tail):
            self.add(
                "hidden_archive",
                "a zip archive is appended behind other data: a loader that looks for the "
                "archive would find content this label hides",
                where,
            )

    def _nest(self, depth: int, where: str) -> None:
        if depth + 1 > self.limits.max_depth:
            raise Abort(
                Finding(
                    "nesting",
                    f"containers nested deeper than {self.limits.max_depth} "
                    "(MLCP_ARTIFACT_MAX_DEPTH)",
                    where,
                )
            )

    # -- archives ---------------------------------------------------------------------------------
    def _zip(self, reader: io.BufferedReader, where: str, depth: int, path: Path | None) -> None:
        if path is None:
            # A member has no random access: spool it to a private file (disk, not memory).
            handle, spooled = tempfile.mkstemp(dir=self.workdir, suffix=".zip")
            with os.fdopen(handle, "wb") as out:
                shutil.copyfileobj(reader, out, CHUNK)
            path = Path(spooled)
        try:
            with zipfile.ZipFile(path) as archive:
                self._members(archive, where, depth, path.stat().st_size)
        except (zipfile.BadZipFile, *DECOMPRESSION_ERRORS, NotImplementedError) as exc:
            self.add("malformed", f"the zip archive cannot be read: {exc}", where)

    def _members(self, archive: zipfile.ZipFile, where: str, depth: int, size: int) -> None:
        infos = archive.infolist()
        if len(infos) > self.limits.max_members:
            raise Abort(
                Finding(
                    "members",
                    f"{len(infos)} members, over the limit of {self.limits.max_members} "
                    "(MLCP_ARTIFACT_MAX_MEMBERS)",
                    where,
                )
            )
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            self.add("members", "two members have the same name: readers disagree on which", where)
        if sum(info.compress_size for info in infos) > size:
            self.add("members", "members overlap (more compressed bytes than the file)", where)
        for info in infos:
            self._member(archive, info, f"{where}!/{info.filename}", depth)
        if SCHEMA in names:
            self._skops(archive, where, names)

    def _member(
        self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, depth: int
    ) -> None:
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if info.filename.startswith(("/", "\\")) or ".." in parts or ":" in info.filename:
            self.add("members", "a member name that escapes the archive", where, info.filename)
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            self.add("members", "a member that is a symbolic link", where, info.filename)
            return
        if info.is_dir():
            return
        if info.flag_bits & 0x1:
            self.add("malformed", "an encrypted member cannot be scanned", where)
            return
        if info.file_size > self.budget.left:
            self.budget.take(info.file_size, where)  # raises: the declared size is over budget
        declared_ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR_BYTES and declared_ratio > self.limits.max_ratio:
            raise Abort(
                Finding(
                    "ratio",
                    f"declares {human_bytes(info.file_size)} from "
                    f"{human_bytes(info.compress_size)} ({declared_ratio:.0f}×), over the limit "
                    f"of {self.limits.max_ratio:g}× (MLCP_ARTIFACT_MAX_RATIO): a decompression "
                    "bomb",
                    where,
                )
            )
        with archive.open(info) as member:
            metered = Metered(member, where, self.budget, lambda: info.compress_size)
            self.stream(metered, where, depth)
            drain(metered)

    def _skops(self, archive: zipfile.ZipFile, where: str, names: list[str]) -> None:
        self.out.kinds.add("skops")
        self.out.scanners.add("skops")
        data, too_large = read_schema(archive, where, self.limits)
        if too_large is not None:
            self.out.findings.append(too_large)
            return
        assert data is not None
        for finding in audit_schema(data, names, where, self.policy, self.workdir):
            self.add(finding.cause, finding.message, finding.where, finding.name)


def scan_file(
    path: Path, declared: str, policy: ArtifactPolicy, limits: ArtifactLimits, name: str
) -> Scanned:
    """Scan the local file ``path`` (declared format ``declared``); never loads it."""
    with tempfile.TemporaryDirectory(prefix="mlcp-scan-") as work:
        scan = _Scan(policy, limits, Path(work), declared)
        try:
            with path.open("rb", buffering=0) as handle:
                scan.stream(
                    handle,
                    name,
                    0,
                    path=path,
                    expect_pickle=declared in PICKLE_FORMATS,
                )
        except Abort as abort:
            scan.out.findings.append(abort.finding)
        if declared == SKOPS_FORMAT and "skops" not in scan.out.kinds:
            scan.add("format", "declared skops, but this is not a skops archive", name)
        return scan.out
