"""The router: the canary gets its percent of keys, each key always the same version."""

from __future__ import annotations

import pytest

from mlcp.client import Split, bucket

pytestmark = pytest.mark.unit

KEYS = [f"user-{i}" for i in range(100_000)]


@pytest.mark.parametrize("percent", [1, 5, 10, 25, 50, 90])
def test_the_canary_gets_its_percent_of_100000_keys_within_one_point(percent: int) -> None:
    split = Split("1.0.0", "1.1.0", percent)
    canary = sum(1 for key in KEYS if split.route(key)[0] == "canary")
    assert abs(canary / len(KEYS) * 100 - percent) <= 1.0


def test_the_same_key_always_meets_the_same_version() -> None:
    split = Split("1.0.0", "1.1.0", 10)
    first = {key: split.route(key) for key in KEYS[:5000]}
    again = Split("1.0.0", "1.1.0", 10)  # another process builds the same split
    assert all(again.route(key) == first[key] for key in reversed(KEYS[:5000]))


def test_raising_the_percent_only_moves_keys_to_the_canary() -> None:
    low, high = Split("p", "c", 10), Split("p", "c", 30)
    moved_back = [k for k in KEYS[:20_000] if low.route(k)[0] == "canary" != high.route(k)[0]]
    assert moved_back == []


def test_the_bucket_is_stable_across_processes() -> None:
    # BLAKE2b, not hash(): the same number on every machine and Python version.
    assert bucket("user-42") == bucket("user-42")
    assert [bucket(k) for k in ("a", "b", "user-1")] == [
        int.from_bytes(__import__("hashlib").blake2b(k.encode(), digest_size=8).digest(), "big")
        % 10_000
        for k in ("a", "b", "user-1")
    ]


def test_one_alias_alone_serves_everything_and_none_is_an_error() -> None:
    assert {Split("1.0.0", None, 50).route(k) for k in KEYS[:100]} == {("production", "1.0.0")}
    assert {Split(None, "1.1.0", 10).route(k) for k in KEYS[:100]} == {("canary", "1.1.0")}
    assert {Split("1.0.0", "1.1.0", 0).route(k)[0] for k in KEYS[:1000]} == {"production"}
    with pytest.raises(LookupError):
        Split(None, None, 10).route("k")
