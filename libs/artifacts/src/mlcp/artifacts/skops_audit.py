"""skops archives: every node of ``schema.json`` against the exact type allow-list, ``.npy``
members that would need pickle, and skops' own audit as the second opinion.

skops never unpickles: it rebuilds objects from a JSON tree of typed nodes and numpy arrays
saved without pickle. Its risk is the types it is told to construct, so each node's
``module.Name`` (a class, or a function for function nodes) must be on the allow-list, and its
node kind one this scanner knows.
"""

from __future__ import annotations

import ast
import json
import zipfile
from pathlib import Path
from typing import Any

from mlcp.artifacts.allowlist import SKOPS_LOADERS
from mlcp.artifacts.findings import Finding
from mlcp.artifacts.limits import ArtifactLimits, human_bytes
from mlcp.artifacts.policy import ArtifactPolicy
from mlcp.artifacts.streams import Readable

SCHEMA = "schema.json"
MAX_SCHEMA_CONTAINERS = 50_000
"""JSON objects and arrays in one ``schema.json`` (counted before parsing, so that a schema of
millions of tiny objects is refused before it costs memory)."""
MAX_NPY_HEADER = 65_536


def audit_schema(
    data: bytes, member_names: list[str], where: str, policy: ArtifactPolicy, workdir: Path
) -> list[Finding]:
    """Findings about the archive's schema: node kinds and types off the list, then skops' own
    verdict on the same schema (``workdir``: where its private copy of the archive goes)."""
    findings: list[Finding] = []
    containers = data.count(b"{") + data.count(b"[")
    if containers > MAX_SCHEMA_CONTAINERS:
        return [
            Finding(
                "malformed",
                f"{SCHEMA} holds {containers} JSON objects/arrays, over {MAX_SCHEMA_CONTAINERS}",
                where,
            )
        ]
    try:
        schema = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return [Finding("malformed", f"{SCHEMA} is not valid JSON: {exc}", where)]
    allowed = policy.skops_types()
    nodes = _nodes(schema)
    del schema  # the parsed tree is the biggest thing a scan holds: gone before skops' own
    for loader, name in nodes:
        if loader not in SKOPS_LOADERS:
            _add(findings, Finding("type_refused", f"skops node kind {loader!r} is unknown", where))
        elif name not in allowed:
            kind = "function" if loader in ("FunctionNode", "MethodNode") else "type"
            _add(
                findings,
                Finding("type_refused", f"{kind} {name} is not on the allow-list", where, name),
            )
    for finding in _skops_opinion(data, member_names, where, allowed, workdir):
        if finding.name is None or finding.name not in {f.name for f in findings}:
            _add(findings, finding)
    return findings


def _nodes(schema: Any) -> set[tuple[str, str]]:
    """``(node kind, module.Name)`` of every node, walked without recursion."""
    out: set[tuple[str, str]] = set()
    pending = [schema]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if "__loader__" in item:
                out.add(
                    (str(item["__loader__"]), f"{item.get('__module__')}.{item.get('__class__')}")
                )
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return out


def _skops_opinion(
    data: bytes, member_names: list[str], where: str, allowed: frozenset[str], workdir: Path
) -> list[Finding]:
    """skops' ``get_untrusted_types`` on the schema, with every other member emptied (skops
    reads them into memory; their content was scanned already)."""
    try:
        from skops.io import get_untrusted_types  # type: ignore[import-untyped]
    except ImportError:
        return [
            Finding(
                "second_opinion",
                "skops is not installed, so the archive cannot be audited by it "
                "(install mlcp-artifacts[skops])",
                where,
            )
        ]
    skeleton = workdir / "skops-skeleton.zip"
    with zipfile.ZipFile(skeleton, "w") as out:
        out.writestr(SCHEMA, data)
        for name in member_names:
            if name != SCHEMA:
                out.writestr(name, b"")
    try:
        untrusted = get_untrusted_types(file=skeleton)
    except Exception as exc:  # skops refusing a hand-made schema is a verdict, not a crash
        return [Finding("second_opinion", f"skops cannot read the archive: {exc}", where)]
    return [
        Finding("second_opinion", f"skops does not trust type {name}", where, name)
        for name in untrusted
        if name not in allowed
    ]


def check_npy(stream: Readable, where: str) -> list[Finding]:
    """A ``.npy`` member's header (read as numpy does, with ``ast.literal_eval``): an object
    dtype is refused, since loading it needs pickle."""
    magic = stream.read(8) or b""
    if len(magic) < 8:
        return [Finding("malformed", "truncated .npy header", where)]
    major = magic[6]
    size_bytes = 2 if major == 1 else 4
    size = int.from_bytes(stream.read(size_bytes) or b"", "little")
    if size > MAX_NPY_HEADER:
        return [Finding("malformed", f".npy header of {human_bytes(size)}", where)]
    raw = stream.read(size) or b""
    try:
        header = ast.literal_eval(raw.decode("utf-8" if major >= 3 else "latin-1"))
        descr = header["descr"]
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
        return [Finding("malformed", "the .npy header cannot be read", where)]
    if _needs_pickle(descr):
        return [
            Finding(
                "object_array",
                "a numpy array of Python objects: loading it needs pickle",
                where,
                name="numpy.object_",
            )
        ]
    return []


def _needs_pickle(descr: Any) -> bool:
    """Whether a numpy dtype description holds an object field anywhere (unknown: assume so)."""
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, list):
        return any(
            not isinstance(field, tuple) or len(field) < 2 or _needs_pickle(field[1])
            for field in descr
        )
    if isinstance(descr, tuple) and descr:
        return _needs_pickle(descr[0])
    return True


def read_schema(
    archive: zipfile.ZipFile, where: str, limits: ArtifactLimits
) -> tuple[bytes | None, Finding | None]:
    """The bytes of ``schema.json`` when its declared size is within the limit."""
    info = archive.getinfo(SCHEMA)
    if info.file_size > limits.max_schema_bytes:
        return None, Finding(
            "too_large",
            f"{SCHEMA} is {human_bytes(info.file_size)}, over the limit of "
            f"{human_bytes(limits.max_schema_bytes)} (MLCP_ARTIFACT_MAX_SCHEMA_BYTES)",
            where,
        )
    with archive.open(info) as member:
        return member.read(limits.max_schema_bytes + 1), None


def _add(findings: list[Finding], finding: Finding) -> None:
    if finding not in findings:
        findings.append(finding)
