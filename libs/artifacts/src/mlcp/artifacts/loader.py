"""The one restricted loader: every place that turns an artifact into a model goes through it.

Fetch into a private copy and verify sha256 first, then run the same scan as the gate, then
load: skops with exactly the allowed types, or — only for a model that opted in — a pickle
through ``RestrictedUnpickler``, whose ``find_class`` allows exactly the allow-list. A file that
slipped past the gate still cannot run code where it is loaded.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from mlcp.artifacts.findings import ArtifactRefused, Finding
from mlcp.artifacts.limits import ArtifactLimits
from mlcp.artifacts.pickles import RestrictedUnpickler
from mlcp.artifacts.policy import ArtifactPolicy
from mlcp.artifacts.scan import verified
from mlcp.artifacts.scanner import PICKLE_FORMATS, SKOPS_FORMAT
from mlcp.artifacts.store import ArtifactStore
from mlcp.artifacts.streams import Budget, Metered, buffered, inflating, sniff


def load_artifact(
    uri: str,
    sha256: str,
    fmt: str,
    *,
    store: ArtifactStore,
    policy: ArtifactPolicy | None = None,
    limits: ArtifactLimits | None = None,
) -> Any:
    """The object stored at ``uri``, or ``ArtifactRefused`` naming why it was not loaded."""
    policy = policy or ArtifactPolicy()
    limits = limits or ArtifactLimits()
    with verified(uri, sha256, fmt, store, policy, limits) as found:
        copy, name = found.path, found.name
        if found.scanned.findings:
            raise ArtifactRefused(tuple(found.scanned.findings), sha256)
        if fmt != SKOPS_FORMAT and fmt not in PICKLE_FORMATS:
            raise ArtifactRefused(
                (
                    Finding(
                        "format",
                        f"no loader for format {fmt!r} yet (skops; pickle formats when the "
                        "model allows them)",
                        name,
                    ),
                ),
                sha256,
            )
        if fmt == SKOPS_FORMAT:
            return _load_skops(copy, policy, name)
        return _load_pickle(copy, policy, limits, name)


def _load_skops(path: Path, policy: ArtifactPolicy, name: str) -> Any:
    import skops.io as sio  # type: ignore[import-untyped]  # slow import: only when needed

    try:
        return sio.load(path, trusted=sorted(policy.skops_types()))
    except sio.exceptions.UntrustedTypesFoundException as exc:
        raise ArtifactRefused((Finding("type_refused", f"skops refused: {exc}", name),)) from None


def _load_pickle(path: Path, policy: ArtifactPolicy, limits: ArtifactLimits, name: str) -> Any:
    if not policy.allow_pickle:  # the scan said so already; never rely on one check alone
        raise ArtifactRefused((Finding("pickle_not_allowed", "pickle is not allowed", name),))
    with path.open("rb", buffering=0) as raw:
        reader = buffered(Metered(raw, name))
        kind = sniff(reader.peek(8)[:8])
        stream: Any = reader
        if kind in ("gzip", "bz2", "xz", "lzma", "zlib"):
            inner, counting = inflating(kind, reader)
            stream = buffered(Metered(inner, name, Budget(limits), lambda: counting.count))
        try:
            return RestrictedUnpickler(stream, policy.pickle_globals()).load()
        except pickle.UnpicklingError as exc:
            raise ArtifactRefused((Finding("global_refused", str(exc), name),)) from None
