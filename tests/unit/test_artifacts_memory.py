"""The scan's memory stays under a fixed bound whatever the input: each worst case of the corpus
is scanned in a fresh process that measures its own peak RSS (tests/unit/scan_memory.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.scan_memory import BOUND_MIB, CASES, Case, measure

pytestmark = pytest.mark.unit

EXPECTED = {
    "one-gib-file": "global_refused",
    "gzip-bomb-inflated": "decompressed_budget",
    "zip-bomb-inflated": "format",
    "many-opcodes": "malformed",
    "nested-containers": "global_refused",
    "skops-schema": None,
    "memo-strings": None,
}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_scan_peak_memory_stays_under_the_bound(case: Case, tmp_path: Path) -> None:
    report = measure(case, tmp_path)
    assert report["payload_ran"] is False
    expected = EXPECTED[case.name]
    if expected is not None:
        assert expected in report["causes"], report["reason"]  # type: ignore[operator]
    assert 0 <= report["peak_mib"] < BOUND_MIB, report  # type: ignore[operator]
