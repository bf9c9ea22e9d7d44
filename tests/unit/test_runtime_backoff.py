"""Every retry loop backs off exponentially with jitter (mlcp.runtime.backoff)."""

from __future__ import annotations

import pytest

from mlcp.runtime.backoff import Backoff, backoff_ceiling_s, backoff_s, jittered

pytestmark = pytest.mark.unit


def test_equal_jitter_keeps_half_the_delay_and_draws_the_rest() -> None:
    assert jittered(4.0, draw=lambda: 0.0) == 2.0
    assert jittered(4.0, draw=lambda: 0.999) == pytest.approx(3.998)
    assert backoff_s(3, initial_s=0.5, maximum_s=10, draw=lambda: 0.5) == pytest.approx(1.5)


def test_ceiling_doubles_and_caps_even_after_a_very_long_outage() -> None:
    assert [backoff_ceiling_s(n, initial_s=1, maximum_s=10) for n in (1, 2, 3, 4, 5)] == [
        1, 2, 4, 8, 10,
    ]  # fmt: skip
    assert backoff_ceiling_s(10_000, initial_s=1, maximum_s=10) == 10


def test_instances_that_failed_together_do_not_retry_together() -> None:
    delays = [Backoff(0.2, 5.0).next() for _ in range(100)]
    assert all(0.1 <= d <= 0.2 for d in delays)
    assert len(set(delays)) > 50


def test_a_success_resets_the_delay() -> None:
    backoff = Backoff(1.0, 60.0)
    for _ in range(5):
        backoff.next()
    backoff.reset()
    assert backoff.next() <= 1.0
