"""The one rule both the monitor (live accuracy) and the trainer (holdout accuracy) score by:
``models.<name>.target`` turns a prediction or a label into its key and says when keys agree."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import yaml

from mlcp.policy.platform import parse_platform_config
from mlcp.policy.target import DEFAULT_TARGET, LabelMismatch, Target
from mlcp.runtime.settings import ConfigurationError
from tests.builders import model_entry, platform_yaml

pytestmark = pytest.mark.unit


def with_target(target: str) -> str:
    """The platform YAML of one model whose ``target`` is the YAML ``target``."""
    return platform_yaml({"churn": model_entry(target=yaml.safe_load(target))})


def test_the_default_compares_by_value_so_true_and_1_agree() -> None:
    # The case: a healthy model sending true/false with labels 1/0 was rolled back.
    t = DEFAULT_TARGET
    assert not t.strict
    assert {t.key(True), t.key(1), t.key(1.0), t.key("1"), t.key("1.0")} == {"1"}
    assert {t.key(False), t.key(0), t.key("0")} == {"0"}
    assert t.key(2.5) == t.key("2.5") == "2.5"
    assert t.key("cat") == "cat"
    assert t.key("true") == "true", "a string stays a string: only numbers are read"
    assert t.accuracy([True, False, True, "1"], [1, 0, 0, 1.0]) == 0.75


def test_a_mapping_turns_other_spellings_into_the_declared_class() -> None:
    t = Target(type="integer", mapping={True: 1, False: 0})
    assert t.strict
    assert t.key(True) == t.key(1) == t.key(1.0) == "1"
    assert t.key(False) == t.key(0) == "0"
    assert t.accuracy([True, False, True], [1, 0, 1]) == 1.0
    with pytest.raises(LabelMismatch, match='"1" is not an integer'):
        t.key("1")
    with pytest.raises(LabelMismatch, match=r"1\.5 is not an integer"):
        t.key(1.5)


def test_a_mapping_key_true_does_not_catch_the_number_1() -> None:
    # Python says True == 1; the mapping must not.
    by_bool = Target(type="string", mapping={True: "yes"})
    assert by_bool.key(True) == "yes"
    with pytest.raises(LabelMismatch, match="1 is not a string"):
        by_bool.key(1)
    by_number = Target(type="string", mapping={1: "one"})
    assert by_number.key(1) == by_number.key(1.0) == "one"
    with pytest.raises(LabelMismatch, match="true is not a string"):
        by_number.key(True)


@pytest.mark.parametrize(
    ("classes", "fits", "misfits"),
    [
        ("boolean", [True, False], [1, 0, "true", None]),
        ("integer", [1, -3, 2.0], [True, "2", 2.5, None]),
        ("string", ["yes", "1"], [1, True, 1.0, None]),
    ],
)
def test_declared_class_types_refuse_every_other_type(
    classes: Any, fits: list[Any], misfits: list[Any]
) -> None:
    t = Target(type=classes)
    for value in fits:
        t.key(value)
    for value in misfits:
        with pytest.raises(LabelMismatch):
            t.key(value)


def test_regression_agrees_within_the_tolerance_and_refuses_non_numbers() -> None:
    t = Target(kind="regression", tolerance=0.5)
    assert t.strict
    assert t.agrees(t.key(10.4), t.key(10))
    assert t.agrees(t.key(9.5), t.key(10)), "the tolerance is inclusive"
    assert not t.agrees(t.key(10.6), t.key(10))
    assert t.accuracy([1, 2, 3, 4], [1.2, 2.8, 3, 4.5]) == 0.75
    for bad in (True, "3", None, float("nan"), float("inf")):
        with pytest.raises(LabelMismatch):
            t.key(bad)
    assert not t.agrees("cat", "1.0"), "a key stored under another target never agrees"


def test_numpy_values_of_a_fitted_model_have_the_same_keys_as_json_values() -> None:
    t = Target(type="integer", mapping={True: 1, False: 0})
    assert t.key(np.int64(1)) == t.key(np.bool_(True)) == t.key(np.float64(1.0)) == "1"
    assert Target(type="string").key(np.str_("a")) == "a"
    assert Target(kind="regression", tolerance=0).key(np.float32(0.5)) == repr(0.5)


def test_no_pair_no_accuracy() -> None:
    assert DEFAULT_TARGET.accuracy([], []) is None


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("{kind: regression}", "models.churn.target: a regression target needs a tolerance"),
        ("{kind: regression, tolerance: -1}", "models.churn.target.tolerance"),
        (
            "{kind: regression, tolerance: 1, mapping: {a: 1}}",
            "models.churn.target: a regression target takes no 'mapping'",
        ),
        ("{type: integer, tolerance: 1}", "only a regression target takes a tolerance"),
        ("{type: float}", "models.churn.target.type"),
        ("{kind: ranking}", "models.churn.target.kind"),
        ("{type: integer, mapping: {true: 'yes'}}", 'mapping[true]: "yes" is not an integer'),
        ("{type: integer, classes: 2}", "models.churn.target.classes: Extra inputs"),
    ],
)
def test_an_invalid_target_stops_the_start_naming_the_field(target: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_platform_config(with_target(target))
    assert message in str(caught.value)


def test_the_yaml_declares_a_target_and_unlisted_models_get_the_default() -> None:
    config = parse_platform_config(
        with_target("{kind: classification, type: integer, mapping: {true: 1, false: 0}}")
    )
    target = config.target("churn")
    assert (target.kind, target.type, target.mapping) == (
        "classification",
        "integer",
        {True: 1, False: 0},
    )
    assert config.target("unlisted") == DEFAULT_TARGET
    regression = parse_platform_config(with_target("{kind: regression, tolerance: 0.5}"))
    assert regression.target("churn").describe() == "regression, tolerance 0.5"
