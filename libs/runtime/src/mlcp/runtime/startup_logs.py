"""A quiet start: Kafka's transient complaints while a service joins its group, said once at INFO.

A service starts several consumers in one group (one per subscriber); each join rebalances the
others, and aiokafka logs every heartbeat that meets the rebalance as a WARNING, a coordinator
that moved as "Marking the coordinator dead", a cluster still creating its offsets topic as an
ERROR. None of it is a fault while the service is starting, and a screen of them hides the one
line that matters. Until the service says it has settled (its consumers are assigned), this
filter turns each kind into one INFO line that says what is being waited for, and drops the
repeats; afterwards every record passes unchanged, at its own level.
"""

from __future__ import annotations

import logging
import re

_TRANSIENT: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"Heartbeat failed for group (\S+) because it is rebalancing"),
        "waiting for consumer group {0} to finish rebalancing (its consumers are joining)",
    ),
    (
        re.compile(r"GroupCoordinatorNotAvailable|Marking the coordinator dead|NotCoordinator"),
        "waiting for the consumer group's coordinator (a new cluster creates its offsets topic)",
    ),
    (
        re.compile(r"LeaderNotAvailable|not found in cluster metadata|UnknownTopicOrPartition"),
        "waiting for topic metadata (partition leaders being elected)",
    ),
)


class StartupNoiseFilter(logging.Filter):
    """Rewrites transient aiokafka warnings and errors during start; see the module doc."""

    def __init__(self) -> None:
        super().__init__()
        self._settled = False
        self._said: set[str] = set()

    def settle(self) -> None:
        """The service has started: from now on every record passes unchanged."""
        self._settled = True

    def filter(self, record: logging.LogRecord) -> bool:
        if self._settled or not record.name.startswith("aiokafka"):
            return True
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        for pattern, what in _TRANSIENT:
            if (found := pattern.search(text)) is not None:
                waiting = what.format(*found.groups())
                if waiting in self._said:
                    return False
                self._said.add(waiting)
                record.msg, record.args = f"{waiting} — Kafka said: {text}", None
                record.levelno, record.levelname = logging.INFO, "INFO"
                return True
        return True


def install(logger: logging.Logger | None = None) -> StartupNoiseFilter:
    """Put a fresh filter on every handler of ``logger`` (the root's by default)."""
    noise = StartupNoiseFilter()
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(noise)
    return noise
