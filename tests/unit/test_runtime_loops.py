"""The one background loop (mlcp.runtime.loops.run_every)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sized

import pytest

from mlcp.runtime.loops import run_every
from tests.conftest import wait_for

pytestmark = pytest.mark.unit


def at_least(items: Sized, n: int) -> Callable[[], Awaitable[bool]]:
    async def enough() -> bool:
        return len(items) >= n

    return enough


async def test_the_step_runs_again_and_again_until_cancelled() -> None:
    rounds: list[int] = []

    async def step() -> None:
        rounds.append(len(rounds))

    task = asyncio.create_task(run_every("tick", 0.001, step))
    await wait_for(at_least(rounds, 5), interval=0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stopped_at = len(rounds)
    await asyncio.sleep(0.01)
    assert len(rounds) == stopped_at, "nothing runs after the cancel"


async def test_an_error_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    async def step() -> None:
        calls.append("call")
        if len(calls) <= 2:
            raise ConnectionError("database away")

    caplog.set_level(logging.WARNING, logger="mlcp.runtime.loops")
    task = asyncio.create_task(run_every("housekeeping", 0.001, step, errors=(ConnectionError,)))
    await wait_for(at_least(calls, 4), interval=0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all(m.startswith("housekeeping: ConnectionError: database away") for m in warnings)


async def test_an_error_outside_the_tolerated_ones_ends_the_loop() -> None:
    async def step() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        await run_every("sweep", 0.001, step, errors=(ConnectionError,))


def test_a_non_positive_interval_is_refused() -> None:
    async def step() -> None:
        return None

    with pytest.raises(ValueError, match="interval_s"):
        asyncio.run(run_every("bad", 0, step))
