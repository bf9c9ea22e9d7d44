"""Pure decisions of the trainer that are neither the ledger's (``ledger.py``) nor a run's
(``runs.py``): which version serves production, and what an unknown model is.

No Kafka, no SQL, no clock: callers pass the facts and get a decision back.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlcp.contracts import ModelPromoted, ModelRolledBack

PRODUCTION = "production"


class UnknownModel(LookupError):
    """An event names a model the platform config does not declare."""


@dataclass(frozen=True)
class StoredArtifact:
    """A registered version's artifact, as the trainer learnt it from the registry."""

    version: str
    uri: str
    sha256: str
    format: str


def production_after_promotion(current: str | None, event: ModelPromoted) -> str | None:
    """The production version once ``event`` is applied (only the production alias counts)."""
    return event.version if event.alias == PRODUCTION else current


def production_after_rollback(current: str | None, event: ModelRolledBack) -> str | None:
    """The production version once ``event`` is applied (the alias goes to ``to_version``)."""
    if event.alias != PRODUCTION:
        return current
    return event.to_version
