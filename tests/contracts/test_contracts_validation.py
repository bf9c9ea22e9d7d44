"""Each validation rule of the contracts, exercised on the realistic examples."""

import copy
import hashlib
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from mlcp.contracts import (
    EVENT_TYPES,
    DataArrived,
    DatasetRef,
    Evidence,
    FeedbackReceived,
    ModelVersionRegistered,
    NumericProfile,
    PredictionLogged,
)
from tests.contracts.contract_examples import EXAMPLES

pytestmark = pytest.mark.contracts


def build(event_type: str, **changes: Any) -> Any:
    """The example of ``event_type`` with ``changes`` applied (``a__b`` sets a nested key)."""
    payload = copy.deepcopy(EXAMPLES[event_type])
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target: Any = payload
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(leaf)] = value
        else:
            target[leaf] = value
    return EVENT_TYPES[event_type].model_validate(payload)


def rejects(event_type: str, loc: str, **changes: Any) -> str:
    """Assert the change is rejected with an error at ``loc``; return the messages."""
    with pytest.raises(ValidationError) as info:
        build(event_type, **changes)
    locs = [".".join(str(p) for p in err["loc"]) for err in info.value.errors()]
    assert any(found.startswith(loc) for found in locs), locs
    return str(info.value)


@pytest.mark.parametrize("event_type", list(EXAMPLES))
def test_examples_are_valid(event_type: str) -> None:
    assert event_type == build(event_type).TYPE


def test_every_type_has_an_example() -> None:
    assert set(EXAMPLES) == set(EVENT_TYPES)


# --- SemVer -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["1.0", "v1.0.0", "01.0.0", "1.0.0-", "latest", "", "1.0.0.0"])
def test_bad_semver(bad: str) -> None:
    message = rejects("mlcp.model.promoted.v1", "version", version=bad)
    assert "SemVer" in message or "valid" in message


@pytest.mark.parametrize("good", ["0.0.1", "1.2.3-rc.1", "10.20.30+build.5", "1.0.0-alpha+001"])
def test_good_semver(good: str) -> None:
    assert build("mlcp.model.promoted.v1", version=good).version == good


def test_semver_in_nested_baseline() -> None:
    rejects("mlcp.run.finished.v1", "baseline.version", baseline__version="1.2")


# --- sha256 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["A" * 64, "a" * 63, "a" * 65, "g" * 64, ""])
def test_bad_sha256(bad: str) -> None:
    rejects("mlcp.data.arrived.v1", "sha256", sha256=bad)
    rejects("mlcp.run.finished.v1", "artifact.sha256", artifact__sha256=bad)


# --- ratios, counts, finite numbers --------------------------------------------------------------
@pytest.mark.parametrize("bad", [1.5, -0.1, math.nan, math.inf])
def test_completeness_is_a_ratio(bad: float) -> None:
    rejects("mlcp.data.arrived.v1", "completeness", completeness=bad)


def test_rows_are_non_negative_integers() -> None:
    rejects("mlcp.data.arrived.v1", "rows", rows=-1)
    rejects("mlcp.data.arrived.v1", "rows", rows=2**60)
    rejects("mlcp.data.arrived.v1", "rows", rows=1.5)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_metrics_must_be_finite(bad: float) -> None:
    rejects("mlcp.run.finished.v1", "metrics.accuracy", metrics__accuracy=bad)


def test_feature_values_must_be_finite() -> None:
    rejects("mlcp.prediction.logged.v1", "features.tenure_months", features__tenure_months=math.nan)


@pytest.mark.parametrize("bad", [-0.001, math.inf, math.nan])
def test_latency_is_finite_and_non_negative(bad: float) -> None:
    rejects("mlcp.prediction.logged.v1", "latency_ms", latency_ms=bad)


def test_duration_is_non_negative() -> None:
    rejects("mlcp.run.finished.v1", "duration_s", duration_s=-1.0)


def test_traffic_percent_is_0_to_100() -> None:
    rejects("mlcp.model.promoted.v1", "traffic_percent", traffic_percent=101)
    assert build("mlcp.model.promoted.v1", traffic_percent=100).traffic_percent == 100


def test_scalars_keep_their_json_type() -> None:
    event = build("mlcp.prediction.logged.v1", prediction=1)
    assert type(event.prediction) is int
    assert type(build("mlcp.prediction.logged.v1", prediction=1.0).prediction) is float
    assert build("mlcp.prediction.logged.v1", prediction=True).prediction is True
    assert build("mlcp.prediction.logged.v1", prediction="yes").prediction == "yes"
    assert event.features == {"tenure_months": 12, "plan": "pro", "discount": None, "vip": True}


# --- names --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["", "Churn", "-churn", "churn model", "a" * 129, "chürn"])
def test_model_name_is_a_slug(bad: str) -> None:
    rejects("mlcp.run.started.v1", "model", model=bad)


def test_dataset_name_is_a_slug() -> None:
    rejects("mlcp.data.arrived.v1", "dataset", dataset="")
    assert build("mlcp.data.arrived.v1", dataset="a" * 128).dataset == "a" * 128


@pytest.mark.parametrize("bad", ["", "has space", "tab\t", "x" * 257])
def test_identifiers_are_bounded_tokens(bad: str) -> None:
    rejects("mlcp.run.started.v1", "run_id", run_id=bad)


@pytest.mark.parametrize("bad", ["", " alice", "bob ", "a\nb"])
def test_principals_are_single_line_text(bad: str) -> None:
    rejects("mlcp.approval.granted.v1", "approver", approver=bad)


def test_free_text_must_not_be_blank_or_huge() -> None:
    rejects("mlcp.gate.failed.v1", "reason", reason="   ")
    rejects("mlcp.gate.failed.v1", "reason", reason="x" * 4097)
    rejects("mlcp.run.failed.v1", "error", error="x" * 16385)
    assert "\n" in build("mlcp.run.failed.v1", error="Traceback:\n  boom").error


def test_feature_names_allow_ordinary_column_names() -> None:
    event = build("mlcp.prediction.logged.v1", features={"Annual Income ($)": 1.0, "年龄": 30})
    assert set(event.features) == {"Annual Income ($)", "年龄"}
    rejects("mlcp.prediction.logged.v1", "features", features={" padded": 1})
    rejects("mlcp.prediction.logged.v1", "features", features={"bad\x00": 1})


def test_metric_names() -> None:
    rejects("mlcp.run.finished.v1", "metrics", metrics={"has space": 1.0})
    assert build("mlcp.run.finished.v1", metrics={"f1@0.5": 1.0, "auc/roc": 0.5}).metrics


def test_uri_is_bounded() -> None:
    rejects("mlcp.data.arrived.v1", "uri", uri="s3://" + "x" * 2044)
    rejects("mlcp.data.arrived.v1", "uri", uri="file:///with space")
    assert build("mlcp.data.arrived.v1", uri="s3://" + "x" * 2043).uri


# --- bounded sizes ------------------------------------------------------------------------------
def test_oversized_collections_are_rejected() -> None:
    many = {f"f{i}": 1.0 for i in range(1001)}
    rejects("mlcp.prediction.logged.v1", "features", features=many)
    schema = [{"name": f"f{i}", "dtype": "float64"} for i in range(1001)]
    rejects("mlcp.run.finished.v1", "feature_schema", feature_schema=schema)
    rejects("mlcp.run.finished.v1", "metrics", metrics={f"m{i}": 1.0 for i in range(257)})
    rejects("mlcp.run.finished.v1", "params", params={f"p{i}": 1 for i in range(257)})
    evidence = EXAMPLES["mlcp.gate.check_passed.v1"]["evidence"] * 101
    rejects("mlcp.gate.check_passed.v1", "evidence", evidence=evidence)
    ids = [f"b{i}" for i in range(10_001)]
    rejects("mlcp.run.finished.v1", "datasets.0.batch_ids", datasets__0__batch_ids=ids)
    rejects("mlcp.gate.passed.v1", "stages", stages=[f"s{i}" for i in range(65)])


def test_required_collections_are_non_empty() -> None:
    rejects("mlcp.run.finished.v1", "datasets", datasets=[])
    rejects("mlcp.run.finished.v1", "feature_schema", feature_schema=[])
    rejects("mlcp.gate.passed.v1", "stages", stages=[])
    rejects("mlcp.drift.detected.v1", "features", features=[])
    rejects("mlcp.model.degraded.v1", "evidence", evidence=[])


# --- time ---------------------------------------------------------------------------------------
def test_timestamps_must_be_timezone_aware_and_become_utc() -> None:
    rejects("mlcp.prediction.logged.v1", "ts", ts="2025-03-01T12:00:00")
    event = build("mlcp.prediction.logged.v1", ts="2025-03-01T20:00:00+08:00")
    assert event.ts == datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert event.ts.utcoffset() == timedelta(0)
    assert '"ts":"2025-03-01T12:00:00Z"' in event.model_dump_json()


def test_window_end_not_before_start() -> None:
    rejects("mlcp.drift.detected.v1", "window", window__end="2025-03-01T11:00:00Z")


def test_python_datetimes_with_offsets_are_accepted() -> None:
    ts = datetime(2025, 1, 1, 8, tzinfo=timezone(timedelta(hours=8)))
    event = FeedbackReceived(model="churn", request_id="r", label=1, ts=ts)
    assert event.ts == ts
    assert event.ts.tzinfo is UTC


# --- cross-field rules --------------------------------------------------------------------------
def test_registered_version_follows_the_bump() -> None:
    rejects("mlcp.model.registered.v1", "", version="1.2.1")  # minor expected
    rejects("mlcp.model.registered.v1", "", version="1.1.0")  # not greater
    rejects("mlcp.model.registered.v1", "", bump="major")
    rejects("mlcp.model.registered.v1", "", bump=None)
    assert build("mlcp.model.registered.v1", version="2.0.0", bump="major").bump == "major"
    assert build("mlcp.model.registered.v1", version="1.2.1", bump="patch").bump == "patch"
    first = build("mlcp.model.registered.v1", previous_version=None, bump=None, version="0.1.0")
    assert isinstance(first, ModelVersionRegistered)


def test_data_threshold_request_needs_its_numbers() -> None:
    message = rejects("mlcp.training.requested.v1", "", rows_since_last_run=None)
    assert "rows_since_last_run" in message
    assert build("mlcp.training.requested.v1", reason="manual", threshold=None).reason == "manual"


def test_prediction_required_unless_error() -> None:
    rejects("mlcp.prediction.logged.v1", "", prediction=None)
    assert build("mlcp.prediction.logged.v1", prediction=None, error=True).error


def test_rollback_must_change_version() -> None:
    rejects("mlcp.model.rolled_back.v1", "", to_version="1.3.0")


def test_feature_schema_names_unique_and_profile_within_schema() -> None:
    dup = [{"name": "a", "dtype": "int64"}, {"name": "a", "dtype": "float64"}]
    assert "duplicate" in rejects("mlcp.run.finished.v1", "", feature_schema=dup)
    schema = [{"name": "tenure_months", "dtype": "int64"}]
    assert "plan" in rejects("mlcp.run.finished.v1", "", feature_schema=schema)


def test_drift_tests_are_unique_per_feature_and_method() -> None:
    features = EXAMPLES["mlcp.drift.detected.v1"]["features"]
    rejects("mlcp.drift.detected.v1", "", features=[features[0], features[0]])


def test_gate_passed_stages_are_unique() -> None:
    rejects("mlcp.gate.passed.v1", "", stages=["quality", "quality"])


# --- reference profiles -------------------------------------------------------------------------
NUMERIC = EXAMPLES["mlcp.run.finished.v1"]["reference_profile"]["features"]["tenure_months"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"bin_edges": [0.0, 48.0, 24.0, 72.0]}, "strictly increasing"),
        ({"bin_edges": [0.0, 72.0]}, "bin_proportions has 3 entries"),
        ({"bin_proportions": [0.5, 0.5, 0.5]}, "sum to"),
        ({"bin_edges": [], "bin_proportions": []}, "at least 2 bin_edges"),
        ({"quantiles": [{"q": 0.9, "value": 1.0}, {"q": 0.5, "value": 2.0}]}, "quantiles"),
        ({"sample": [0.0] * 1001}, "sample"),
        ({"bin_edges": [float(i) for i in range(102)]}, "bin_edges"),
        ({"min": 5.0, "max": 1.0}, "max is below min"),
    ],
)
def test_numeric_profile_rules(change: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        NumericProfile.model_validate({**NUMERIC, **change})


def test_empty_numeric_profile_may_have_no_bins() -> None:
    profile = NumericProfile(count=0, missing=10)
    assert profile.bin_edges == ()
    assert profile.bin_proportions == ()


def test_categorical_frequencies_sum_to_one() -> None:
    rejects(
        "mlcp.run.finished.v1",
        "reference_profile.features.plan",
        reference_profile__features__plan__other=0.5,
    )


def test_profile_kind_selects_the_shape() -> None:
    rejects(
        "mlcp.run.finished.v1",
        "reference_profile.features.plan",
        reference_profile__features__plan__kind="histogram",
    )


# --- evidence -----------------------------------------------------------------------------------
def test_evidence_evaluate() -> None:
    assert Evidence.evaluate("accuracy", 0.93, ">=", 0.92).satisfied is True
    assert Evidence.evaluate("error_rate", 0.08, "<=", 0.05).satisfied is False
    assert Evidence.evaluate("accuracy", None, ">=", 0.92).satisfied is False
    rejects("mlcp.gate.failed.v1", "evidence.0.operator", evidence__0__operator="=>")


def test_dataset_fingerprint() -> None:
    expected = hashlib.sha256(("a" * 64 + "\n" + "b" * 64 + "\n").encode()).hexdigest()
    assert DatasetRef.fingerprint(["a" * 64, "b" * 64]) == expected
    assert DatasetRef.fingerprint(["b" * 64, "a" * 64]) != expected


# --- tolerant reader, immutability, keys --------------------------------------------------------
def test_unknown_fields_are_ignored() -> None:
    payload = {**EXAMPLES["mlcp.data.arrived.v1"], "added_in_a_later_minor": {"x": 1}}
    event = DataArrived.model_validate(payload)
    assert "added_in_a_later_minor" not in event.model_dump()


@pytest.mark.parametrize("event_type", list(EXAMPLES))
def test_models_are_frozen(event_type: str) -> None:
    event = build(event_type)
    field = next(iter(type(event).model_fields))
    with pytest.raises(ValidationError, match="frozen"):
        setattr(event, field, None)


def test_keys() -> None:
    assert build("mlcp.data.arrived.v1").key == "churn-events"
    assert build("mlcp.run.finished.v1").key == "churn"
    assert PredictionLogged.KEY_FIELD == "model"


# --- lineage: per-batch digests and the dataset digest -------------------------------------------
def test_the_dataset_digest_recipe_is_in_the_schema_and_is_what_fingerprint_computes() -> None:
    schema = DatasetRef.model_json_schema()
    recipe = schema["properties"]["sha256"]["description"]
    assert "64 lowercase hex characters followed by a newline" in recipe
    assert "ledger order" in recipe
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(3)]
    # The recipe, written out as a client reading only the schema would.
    by_recipe = hashlib.sha256("".join(f"{h}\n" for h in digests).encode()).hexdigest()
    assert DatasetRef.fingerprint(digests) == by_recipe
    batch = schema["$defs"]["BatchRef"]
    assert set(batch["required"]) == {"batch_id", "uri", "rows", "sha256"}


def test_batches_must_agree_with_the_ids_the_digest_and_the_rows() -> None:
    run = "mlcp.run.finished.v1"
    assert len(build(run).datasets[0].batches) == 2
    message = rejects(run, "datasets.0", datasets__0__batch_ids=["x", "2025-03-01-b"])
    assert "batches must list batch_ids" in message
    message = rejects(run, "datasets.0", datasets__0__sha256="b" * 64)
    assert "not the fingerprint" in message
    message = rejects(run, "datasets.0", datasets__0__rows=1)
    assert "not the sum of the batches' rows" in message
    # Producers that predate per-batch digests send ids only: still valid.
    assert build(run, datasets__0__batches=[]).datasets[0].batches == ()
    rejects(run, "datasets.0.batches.1.uri", datasets__0__batches__1__uri="")


def test_the_default_batch_id_is_stable_for_the_same_content() -> None:
    digest = hashlib.sha256(b"rows").hexdigest()
    assert DataArrived.batch_id_for(digest) == DataArrived.batch_id_for(digest)
    assert DataArrived.batch_id_for(digest) == f"sha256-{digest[:16]}"
    assert build("mlcp.data.arrived.v1", batch_id=DataArrived.batch_id_for(digest)).batch_id
