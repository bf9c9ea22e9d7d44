"""The one reference-profile builder: what the trainer ships is what the monitor bins against."""

from __future__ import annotations

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from pydantic import ValidationError

from mlcp.contracts import CategoricalProfile, NumericProfile
from mlcp.monitor.drift import Layout
from mlcp.profiles import (
    CATEGORY_KEY_LENGTH,
    category_key,
    reference_profile,
    sample_size_for,
)
from mlcp.trainer.profile import reference_profile as trainer_profile

pytestmark = pytest.mark.unit


def test_a_1024_character_category_round_trips_from_profile_to_live_bin() -> None:
    long_a, long_b = "a" * 1024, "a" * 512 + "b" * 512  # differ only past the cut
    frame = pd.DataFrame({"plan": [long_a] * 30 + ["short"] * 10})
    profile = trainer_profile(frame, seed=0)
    feature = profile.features["plan"]
    assert isinstance(feature, CategoricalProfile)
    assert set(feature.frequencies) == {long_a[:CATEGORY_KEY_LENGTH], "short"}

    layout = Layout(profile)
    encoded = layout.encode([{"plan": long_a}, {"plan": "short"}, {"plan": "new"}, {"plan": None}])
    index = layout.categorical[0].index
    unlisted = len(index)
    assert encoded.categorical[:, 0].tolist() == [
        index[long_a[:CATEGORY_KEY_LENGTH]],
        index["short"],
        unlisted,
        -1,
    ]
    # A category is named by its first CATEGORY_KEY_LENGTH characters, on both sides alike.
    assert category_key(long_b) == category_key(long_a)


def test_the_category_key_length_is_the_contracts_limit() -> None:
    CategoricalProfile(count=1, frequencies={"x" * CATEGORY_KEY_LENGTH: 1.0})
    with pytest.raises(ValidationError):
        CategoricalProfile(count=1, frequencies={"x" * (CATEGORY_KEY_LENGTH + 1): 1.0})


def test_booleans_are_categories_named_true_and_false() -> None:
    assert [category_key(v) for v in (True, np.bool_(False), 1, 1.5, "x")] == [
        "true",
        "false",
        "1",
        "1.5",
        "x",
    ]
    frame = pd.DataFrame({"flag": [True, False, True, True]})
    feature = trainer_profile(frame, seed=0).features["flag"]
    assert isinstance(feature, CategoricalProfile)
    assert feature.frequencies == {"true": 0.75, "false": 0.25}


def test_numeric_columns_get_bins_quantiles_and_a_seeded_sample() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(0, 1, 5000)
    values[:10] = np.nan
    profile = reference_profile({"x": values, "y": rng.normal(0, 1, 5000)}, seed=7)
    x = profile.features["x"]
    assert isinstance(x, NumericProfile)
    assert (x.count, x.missing) == (4990, 10)
    assert len(x.bin_edges) == 11
    assert sum(x.bin_proportions) == pytest.approx(1.0)
    assert len(x.quantiles) == 21
    assert len(x.sample) == sample_size_for(2) == 1000
    assert reference_profile({"x": values, "y": values}, seed=7).features["x"] == x


def test_the_sample_shrinks_with_the_number_of_features() -> None:
    assert sample_size_for(1) == 1000
    assert sample_size_for(20) == 300
    assert sample_size_for(1000) == 20


def test_a_constant_feature_gets_one_bin_around_its_value() -> None:
    feature = reference_profile({"c": np.full(50, 3.0)}).features["c"]
    assert isinstance(feature, NumericProfile)
    assert feature.bin_edges == (2.997, 3.003)
    assert feature.bin_proportions == (1.0,)


def test_categories_beyond_the_top_200_go_to_other_and_missing_values_are_counted() -> None:
    values: list[object] = [f"c{i}" for i in range(300)] * 2 + ["top"] * 10 + [None, float("nan")]
    feature = reference_profile({"c": values}).features["c"]
    assert isinstance(feature, CategoricalProfile)
    assert (feature.count, feature.missing) == (610, 2)
    assert len(feature.frequencies) == 200
    assert next(iter(feature.frequencies)) == "top"
    assert feature.other == pytest.approx(1 - (10 + 199 * 2) / 610)


def test_the_trainer_profiles_pandas_columns_with_the_shared_builder() -> None:
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {
            "n": rng.normal(0, 1, 200),
            "i": pd.array([1, None, 3, 4] * 50, dtype="Int64"),
            "s": pd.Series(["u", None, "v", "u"] * 50, dtype=object),
        }
    )
    profile = trainer_profile(frame, seed=2)
    columns = {
        "n": frame["n"].to_numpy(),
        "i": np.array([1.0, np.nan, 3.0, 4.0] * 50),
        "s": ["u", None, "v", "u"] * 50,
    }
    assert profile == reference_profile(columns, seed=2)
    i = profile.features["i"]
    assert isinstance(i, NumericProfile)
    assert (i.count, i.missing) == (150, 50)
