"""Exponential backoff with jitter, for every retry loop of the project.

Without jitter, every instance that lost Kafka or PostgreSQL at the same moment retries at the
same moments too, and they hit the server in lockstep as it comes back. "Equal jitter" keeps
half of each delay (a retry never comes hot on the heels of a failure) and draws the other half
at random, which spreads the instances over the window. Pure: no I/O, importable anywhere.
"""

from __future__ import annotations

import random
from collections.abc import Callable

_MAX_EXPONENT = 32
"""Caps the doubling: an outage of hours must not overflow the float."""


def jittered(delay_s: float, draw: Callable[[], float] = random.random) -> float:
    """``delay_s`` with equal jitter: somewhere in ``[delay_s / 2, delay_s)``."""
    return delay_s * (0.5 + 0.5 * draw())


def backoff_ceiling_s(attempt: int, *, initial_s: float, maximum_s: float) -> float:
    """The un-jittered delay before retry number ``attempt`` (1-based): doubling, capped."""
    exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
    return float(min(initial_s * 2.0**exponent, maximum_s))


def backoff_s(
    attempt: int,
    *,
    initial_s: float,
    maximum_s: float,
    draw: Callable[[], float] = random.random,
) -> float:
    """The delay before retry number ``attempt`` (1-based): exponential, capped, jittered."""
    return jittered(backoff_ceiling_s(attempt, initial_s=initial_s, maximum_s=maximum_s), draw)


class Backoff:
    """A retry loop's delays: ``next()`` after each failure, ``reset()`` after a success."""

    def __init__(self, initial_s: float, maximum_s: float) -> None:
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next try (one more failure counted)."""
        self.attempt += 1
        return backoff_s(self.attempt, initial_s=self.initial_s, maximum_s=self.maximum_s)

    def reset(self) -> None:
        """The last try succeeded: the next failure waits the shortest delay again."""
        self.attempt = 0
