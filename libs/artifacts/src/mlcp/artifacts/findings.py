"""What a scan refuses, and why: each finding names its cause, the offending thing and where."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Cause = Literal[
    "global_refused",  # a pickle global outside the exact allow-list
    "type_refused",  # a skops node type outside the allow-list
    "opcode_refused",  # a pickle opcode that reaches outside the stream (extensions, persid …)
    "second_opinion",  # picklescan or skops refused what the allow-list let through
    "pickle_not_allowed",  # a pickle stream, and the model did not opt in
    "object_array",  # a .npy member that needs pickle to load
    "hidden_archive",  # a zip archive behind other data
    "too_large",  # the artifact is over max_bytes
    "decompressed_budget",  # inflated bytes over max_decompressed_bytes
    "ratio",  # a stream inflating more than max_ratio
    "nesting",  # containers nested deeper than max_depth
    "members",  # an archive with too many, duplicate, linked or escaping members
    "malformed",  # a stream that cannot be parsed to its end (fail closed)
    "format",  # content that is not what its declared format says
    "digest_mismatch",  # sha256 of the bytes read differs from the registered one
    "unreadable",  # missing, not a regular file, unsupported store
    "outside_root",  # a path out of the artifact root
    "symlink",  # a symbolic link on the way to the artifact
]

# Findings about what the artifact would run come first in a reason: they are the ones a
# reviewer must see even when the reason is cut short.
_PRIORITY: dict[str, int] = {
    "global_refused": 0,
    "opcode_refused": 0,
    "type_refused": 0,
    "second_opinion": 1,
    "object_array": 1,
    "hidden_archive": 1,
    "pickle_not_allowed": 2,
}


@dataclass(frozen=True)
class Finding:
    """One reason to refuse an artifact."""

    cause: Cause
    message: str
    """What is wrong, naming the offending global, type, limit or path."""
    where: str
    """The file, and inside it the member / layer: ``model.zip!/data.pkl``, ``m.joblib[gzip]``."""
    name: str | None = None
    """The offending global or type, when there is one (``posix.system``)."""

    def __str__(self) -> str:
        return f"{self.message} (in {self.where})"


def ordered(findings: tuple[Finding, ...] | list[Finding]) -> tuple[Finding, ...]:
    """Findings about executable content first, then the others, each group as found."""
    return tuple(sorted(findings, key=lambda f: _PRIORITY.get(f.cause, 3)))


class ArtifactRefused(Exception):
    """The artifact was not loaded (or not passed): the findings say why."""

    def __init__(self, findings: tuple[Finding, ...], actual_sha256: str | None = None) -> None:
        self.findings = ordered(findings)
        self.actual_sha256 = actual_sha256
        super().__init__("; ".join(str(f) for f in self.findings))

    @property
    def causes(self) -> tuple[str, ...]:
        """The distinct causes, most serious first."""
        return tuple(dict.fromkeys(f.cause for f in self.findings))
