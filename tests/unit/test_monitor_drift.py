"""Drift statistics of the monitor agree with scipy and a hand-computed PSI on fixed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats  # type: ignore[import-untyped]

from mlcp.contracts import CategoricalProfile, NumericProfile, ReferenceProfile
from mlcp.monitor.drift import (
    Encoded,
    Layout,
    bin_counts,
    chi_squared,
    evaluate_window,
    ks_statistic,
    ks_test,
    psi,
    sorted_bin_counts,
)
from mlcp.policy.platform import DriftPolicy
from mlcp.profiles import reference_profile

pytestmark = pytest.mark.unit


def test_psi_matches_the_hand_computed_reference_value() -> None:
    expected = np.array([0.25, 0.25, 0.25, 0.25])
    actual = np.array([0.1, 0.2, 0.3, 0.4])
    by_hand = sum((a - e) * math.log(a / e) for e, a in zip(expected, actual, strict=True))
    assert psi(expected, actual) == pytest.approx(by_hand, rel=1e-12)
    assert psi(expected, actual) == pytest.approx(0.2282, abs=1e-4)


def test_psi_of_identical_distributions_is_zero_and_empty_bins_use_the_floor() -> None:
    shares = np.array([0.2, 0.3, 0.5])
    assert psi(shares, shares) == 0.0
    # An empty live bin counts as 0.0001 (Evidently), so the value is finite.
    value = psi(np.array([0.5, 0.5]), np.array([1.0, 0.0]))
    by_hand = (1.0 - 0.5) * math.log(1.0 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert value == pytest.approx(by_hand)


def test_bin_counts_agree_with_numpy_histogram_and_clip_outliers_to_the_end_bins() -> None:
    rng = np.random.default_rng(1)
    edges = np.array([0.0, 1.0, 2.5, 4.0, 10.0])
    inside = rng.uniform(0, 10, 5000)
    assert bin_counts(inside, edges).tolist() == np.histogram(inside, edges)[0].tolist()
    assert bin_counts(np.array([-5.0, 0.0, 10.0, 99.0]), edges).tolist() == [2, 0, 0, 2]
    ordered = np.sort(np.concatenate([inside, [-5.0, 99.0, 2.5, 4.0]]))
    assert sorted_bin_counts(ordered, edges).tolist() == bin_counts(ordered, edges).tolist()


def _numeric_layout(reference: np.ndarray) -> Layout:
    return Layout(reference_profile({"x": reference}))


def test_ks_test_agrees_with_scipy_ks_2samp() -> None:
    rng = np.random.default_rng(2)
    layout = _numeric_layout(rng.normal(0, 1, 5000))
    live = rng.normal(0.3, 1, 800)
    report = evaluate_window(layout, layout.encode([{"x": v} for v in live]), DriftPolicy())
    ks = next(t for t in report.tests if t.method == "ks")
    sample = layout.numeric[0].sample
    expected = stats.ks_2samp(sample, live)
    assert ks.score == pytest.approx(expected.pvalue, rel=1e-9)
    assert ks.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert ks.drifted == bool(expected.pvalue < 0.05)


def test_psi_on_the_profile_bins_matches_a_direct_computation() -> None:
    profile = ReferenceProfile(
        rows=100,
        features={
            "x": NumericProfile(
                count=100, bin_edges=(0.0, 25.0, 50.0, 75.0, 100.0), bin_proportions=(0.25,) * 4
            )
        },
    )
    layout = Layout(profile)
    live = [5.0] * 10 + [30.0] * 20 + [60.0] * 30 + [90.0] * 35 + [150.0] * 5  # 150 → last bin
    report = evaluate_window(layout, layout.encode([{"x": v} for v in live]), DriftPolicy())
    (test,) = report.tests  # no sample in the profile: PSI only
    assert test.method == "psi"
    assert test.score == pytest.approx(psi(np.full(4, 0.25), np.array([0.1, 0.2, 0.3, 0.4])))
    assert test.drifted  # 0.228 ≥ 0.2


def test_chi_squared_agrees_with_scipy_and_unseen_categories_count_as_drift() -> None:
    shares = np.array([0.5, 0.3, 0.2, 0.0])
    observed = np.array([40.0, 35.0, 25.0, 0.0])
    statistic, p = chi_squared(shares, observed)
    expected = stats.chisquare(observed[:3], shares[:3] * 100)
    assert statistic == pytest.approx(expected.statistic)
    assert p == pytest.approx(expected.pvalue)
    _, p_unseen = chi_squared(shares, np.array([40.0, 35.0, 20.0, 5.0]))
    assert p_unseen < 1e-6


def test_categorical_features_get_psi_and_chi2_and_unknown_values_fall_in_other() -> None:
    profile = ReferenceProfile(
        rows=10,
        features={"plan": CategoricalProfile(count=10, frequencies={"a": 0.5, "b": 0.5})},
    )
    layout = Layout(profile)
    encoded = layout.encode([{"plan": v} for v in ["a", "b", "zzz", None, True]])
    assert encoded.categorical[:, 0].tolist() == [0, 1, 2, -1, 2]
    rows = [{"plan": "a"}] * 20 + [{"plan": "b"}] * 20
    report = evaluate_window(layout, layout.encode(rows), DriftPolicy())
    assert {t.method for t in report.tests} == {"psi", "chi2"}
    assert not report.detected
    drifted = [{"plan": "a"}] * 38 + [{"plan": "c"}] * 2
    assert evaluate_window(layout, layout.encode(drifted), DriftPolicy()).detected


def test_missing_features_and_bad_values_are_counted_not_fatal() -> None:
    layout = Layout(reference_profile({"x": np.arange(100.0), "y": np.arange(100.0)}))
    encoded = layout.encode([{"x": 1.0}, {"x": None, "y": 2}, {"x": "oops", "y": 3.0}])
    assert encoded.bad_values == 1
    assert encoded.missing_per_feature().tolist() == [2, 1]
    assert encoded.rows_with_missing() == 3


def test_dataset_rule_needs_the_configured_share_of_drifted_features() -> None:
    rng = np.random.default_rng(3)
    ref = {name: rng.normal(0, 1, 4000) for name in ("a", "b", "c")}
    layout = Layout(reference_profile(ref))
    live = {"a": rng.normal(2, 1, 1000), "b": rng.normal(2, 1, 1000), "c": rng.normal(0, 1, 1000)}
    rows = [{k: float(live[k][i]) for k in live} for i in range(1000)]
    window = layout.encode(rows)
    report = evaluate_window(layout, window, DriftPolicy(share_of_features=0.5))
    drifted = {t.name for t in report.tests if t.drifted}
    assert {"a", "b"} <= drifted
    assert report.share_drifted >= 2 / 3
    assert report.detected
    assert not evaluate_window(layout, window, DriftPolicy(share_of_features=1.0)).detected


def test_per_feature_psi_override_replaces_the_model_threshold() -> None:
    rng = np.random.default_rng(4)
    layout = Layout(reference_profile({"a": rng.normal(0, 1, 4000)}))
    window = layout.encode([{"a": float(v)} for v in rng.normal(0.5, 1, 1000)])
    default = evaluate_window(layout, window, DriftPolicy())
    relaxed = evaluate_window(layout, window, DriftPolicy(features={"a": 5.0}))
    psi_default = next(t for t in default.tests if t.method == "psi")
    psi_relaxed = next(t for t in relaxed.tests if t.method == "psi")
    assert psi_default.threshold == 0.2
    assert psi_relaxed.threshold == 5.0
    assert psi_default.drifted
    assert not psi_relaxed.drifted


def test_windows_survive_the_byte_round_trip_of_their_chunks() -> None:
    layout = Layout(
        reference_profile({"x": np.arange(50.0), "c": ["u", "v"] * 25})  # numeric + categorical
    )
    first = layout.encode([{"x": 1.5, "c": "u"}, {"x": None, "c": "w"}])
    second = layout.encode([{"x": 3.0, "c": None}])
    chunks = [first.to_chunk(), second.to_chunk()]
    merged = Encoded.from_chunks(chunks, layout)
    assert merged.rows == 3
    assert np.array_equal(merged.numeric[:, 0], [1.5, np.nan, 3.0], equal_nan=True)
    assert merged.categorical[:, 0].tolist() == [0, 2, -1]


@pytest.mark.parametrize(
    ("reference", "live"),
    [
        (np.random.default_rng(5).normal(0, 1, 1000), np.random.default_rng(6).normal(0.1, 1, 777)),
        # ties on both sides (rounded values), and live values outside the sample's range
        (
            np.round(np.random.default_rng(7).normal(0, 1, 500), 1),
            np.round(np.random.default_rng(8).normal(0, 2, 3000), 1),
        ),
        (np.arange(10.0), np.array([-1.0, 3.0, 3.0, 3.0, 42.0] * 4)),
    ],
)
def test_the_sort_free_ks_distance_equals_scipys(reference: np.ndarray, live: np.ndarray) -> None:
    layout = _numeric_layout(reference)
    ref = layout.numeric[0]
    assert ks_statistic(ref, np.sort(live)) == pytest.approx(
        stats.ks_2samp(ref.sample, live).statistic, rel=1e-12, abs=1e-15
    )


def test_large_windows_agree_with_scipy_ks_2samp_auto_mode() -> None:
    rng = np.random.default_rng(9)
    layout = _numeric_layout(rng.normal(0, 1, 5000))
    ref = layout.numeric[0]
    for live in (rng.normal(0, 1, 50_000), rng.normal(0.02, 1, 50_000)):
        d, p = ks_test(ref, np.sort(live))
        expected = stats.ks_2samp(ref.sample, live)  # n > 10,000: scipy's asymptotic branch
        assert d == pytest.approx(expected.statistic, rel=1e-12)
        assert p == pytest.approx(expected.pvalue, rel=1e-9)


def test_memoised_exact_p_values_equal_scipys_for_every_window() -> None:
    """Windows that share (m, n, round(D·lcm)) reuse one exact p-value: each must still be
    exactly what ks_2samp says for its own data (ties included, hits and misses alike)."""
    rng = np.random.default_rng(11)
    layout = _numeric_layout(np.round(rng.normal(0, 1, 3000), 1))
    ref = layout.numeric[0]
    hs = []
    for _ in range(150):
        live = np.round(rng.normal(rng.choice([0.0, 0.2]), 1, 240), 1)
        d, p = ks_test(ref, np.sort(live))
        expected = stats.ks_2samp(ref.sample, live)  # both ≤ 10,000: scipy's exact branch
        assert d == pytest.approx(expected.statistic, rel=1e-12, abs=1e-15)
        assert p == expected.pvalue
        hs.append(round(d * math.lcm(ref.sample.size, live.size)))
    assert len(set(hs)) < len(hs), "no window reused a memoised p-value: the test proves nothing"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["a", "b", "c", "extra"]),
            st.one_of(
                st.floats(allow_nan=False, allow_infinity=False),
                st.integers(-(2**53) + 1, 2**53 - 1),
                st.booleans(),
                st.none(),
                st.sampled_from(["x", "7", ""]),
            ),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_the_one_pass_numeric_encoding_equals_the_column_by_column_one(
    rows: list[dict[str, object]],
) -> None:
    layout = Layout(reference_profile({n: np.arange(50.0) for n in ("a", "b", "c")}))
    fast, _ = layout._numeric_fast(rows)
    slow, bad = layout._numeric_by_column(rows)
    if fast is not None:  # it only answers when every value is a number
        assert bad == 0
        np.testing.assert_array_equal(fast, slow)
    complete = [{"a": 1.5, "b": 2, "c": True, "extra": "x"}] * 3
    fast, _ = layout._numeric_fast(complete)
    assert fast is not None
    assert fast.tolist() == [[1.5, 2.0, 1.0]] * 3
