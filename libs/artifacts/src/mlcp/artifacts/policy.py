"""What one model allows beyond the defaults: pickle at all, and extra exact names."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mlcp.artifacts.allowlist import PICKLE_GLOBALS, SKOPS_TYPES

TRUSTED_NAME = re.compile(
    r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)"
    r"(?::(?P<qual>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)|\.(?P<name>[A-Za-z_]\w*))$"
)
"""``module.Name`` (the name is the last dotted part) or ``module:Qualified.Name``."""


def parse_trusted(entry: str) -> tuple[str, str]:
    """``"sklearn.tree._tree.Tree"`` → ``("sklearn.tree._tree", "Tree")``;
    ``"pkg.mod:Outer.Inner"`` → ``("pkg.mod", "Outer.Inner")``. ``ValueError`` otherwise."""
    match = TRUSTED_NAME.match(entry)
    if match is None:
        raise ValueError(
            f"{entry!r} is not an exact name like 'sklearn.tree._tree.Tree' "
            "or 'package.module:Outer.Inner'"
        )
    return match.group("module"), match.group("qual") or match.group("name")


@dataclass(frozen=True)
class ArtifactPolicy:
    """A model's artifact rules: pickle refused unless ``allow_pickle``; ``trusted`` adds exact
    names (globals and skops types) to the reviewed allow-list."""

    allow_pickle: bool = False
    trusted: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "trusted", frozenset(self.trusted))
        for entry in self.trusted:
            parse_trusted(entry)

    def pickle_globals(self) -> frozenset[tuple[str, str]]:
        """Every ``(module, qualified name)`` a pickle stream may name under this policy."""
        return PICKLE_GLOBALS | {parse_trusted(t) for t in self.trusted}

    def skops_types(self) -> frozenset[str]:
        """Every ``module.Name`` a skops archive may name under this policy."""
        return SKOPS_TYPES | {".".join(parse_trusted(t)) for t in self.trusted}
