"""The one clock of mlcp: timezone-aware UTC, the only kind of time on the wire and in state."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, timezone-aware in UTC. Read it once per decision and pass it down, so that one
    decision sees one instant (and tests can hand a decision any instant they like)."""
    return datetime.now(UTC)
