"""The one background loop: do a step every interval, survive errors, stop on cancel.

Services run periodic work beside their consumers (a deadline sweep, housekeeping, a gauge
refresh) as ``runtime.background(name, run_every(...))``. Every such loop wants the same
things: the step again after ``interval_s``; an error logged (not raised: one bad round must not
end the loop) and the next try after a doubling backoff capped at ``max_backoff_s``, so an
outage costs a few lines, not one per round; cancellation ends it at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def run_every(
    name: str,
    interval_s: float,
    step: Callable[[], Awaitable[object]],
    *,
    errors: tuple[type[BaseException], ...] = (Exception,),
    max_backoff_s: float = 30.0,
    logger: logging.Logger = log,
    traceback: bool = False,
) -> None:
    """Await ``step()`` every ``interval_s`` seconds until cancelled.

    An error in ``errors`` is logged with ``name`` and the step is tried again after
    ``interval_s``, then twice that, … up to ``max_backoff_s``; a success resets the wait. Other
    exceptions (bugs outside ``errors``) end the loop, as the runtime's ``background`` expects.
    ``traceback=True`` logs the stack too (for ``errors`` wide enough to catch bugs).
    """
    if interval_s <= 0:
        raise ValueError(f"{name}: interval_s must be > 0, not {interval_s}")
    wait = interval_s
    while True:
        try:
            await step()
            wait = interval_s
        except errors as exc:
            logger.warning("%s: %s: %s; trying again in %.1fs", name, type(exc).__name__, exc, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, max(max_backoff_s, interval_s))
            continue
        await asyncio.sleep(wait)
