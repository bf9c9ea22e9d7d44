"""mlcp.artifacts on benign artifacts and on the scanner's own rules: the trainer's real skops
output passes and loads; opted-in pickles of the example model pass and load; what is refused
(by format, by opcode pattern) and why; limits, policies and the store's checks."""

from __future__ import annotations

import bz2
import io
import lzma
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from mlcp.artifacts import (
    PICKLE_GLOBALS,
    ArtifactLimits,
    ArtifactPolicy,
    ArtifactRefused,
    FileStore,
    load_artifact,
    open_store,
    parse_trusted,
    scan_artifact,
)
from mlcp.artifacts.limits import GiB, MiB
from mlcp.examples.sklearn import make_rows, train_logistic, write_batches
from mlcp.trainer.training import run_job
from tests.builders import OPTED_IN, call, job_spec, op_str, sha256_of, stream

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def example() -> tuple[Pipeline, Any]:
    """The example model family's estimator, trained on its example data, and some rows."""
    rows = make_rows(400, seed=3)
    features = rows.drop(columns=["churned"])
    return train_logistic(features, rows["churned"], {"seed": 3}), features


def put(root: Path, name: str, data: bytes) -> tuple[str, str]:
    path = root / name
    path.write_bytes(data)
    return path.as_uri(), sha256_of(path)


def scan(root: Path, name: str, data: bytes, fmt: str, **kwargs: Any) -> Any:
    uri, sha = put(root, name, data)
    return scan_artifact(uri, sha, fmt, store=FileStore(root), **kwargs)


def load(root: Path, name: str, data: bytes, fmt: str, **kwargs: Any) -> Any:
    uri, sha = put(root, name, data)
    return load_artifact(uri, sha, fmt, store=FileStore(root), **kwargs)


# --- benign artifacts ----------------------------------------------------------------------------


def test_the_trainers_real_artifact_passes_and_loads(tmp_path: Path) -> None:
    files = write_batches(tmp_path / "batches", batches=2, rows_per_batch=300, seed=5)
    spec = job_spec(files, tmp_path)
    artifact = run_job(spec)["artifact"]
    store = FileStore(tmp_path / "artifacts")
    result = scan_artifact(artifact["uri"], artifact["sha256"], "skops", store=store)
    assert (result.passed, result.reason) == (True, "")
    assert result.scanners == ("allow-list", "skops")
    assert {"skops", "npy"} <= set(result.kinds)
    model = load_artifact(artifact["uri"], artifact["sha256"], "skops", store=store)
    assert [type(step).__name__ for _, step in model.steps] == [
        "StandardScaler",
        "LogisticRegression",
    ]
    rows = make_rows(20, seed=9).drop(columns=["churned"])
    assert model.predict_proba(rows).shape == (20, 2)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_an_opted_in_pickle_of_the_example_model_passes_and_loads(
    example: tuple[Pipeline, Any], tmp_path: Path, protocol: int
) -> None:
    model, rows = example
    data = pickle.dumps(model, protocol=protocol)
    result = scan(tmp_path, "m.pkl", data, "pickle", policy=OPTED_IN)
    assert (result.passed, result.scanners) == (True, ("allow-list", "picklescan"))
    loaded = load(tmp_path, "m.pkl", data, "pickle", policy=OPTED_IN)
    np.testing.assert_array_equal(loaded.predict_proba(rows), model.predict_proba(rows))


def test_a_pickle_is_refused_unless_the_model_opted_in(
    example: tuple[Pipeline, Any], tmp_path: Path
) -> None:
    data = pickle.dumps(example[0], protocol=5)
    result = scan(tmp_path, "m.pkl", data, "pickle")
    assert [f.cause for f in result.findings] == ["pickle_not_allowed"]
    with pytest.raises(ArtifactRefused, match="does not allow pickle"):
        load(tmp_path, "m.pkl", data, "pickle")


@pytest.mark.parametrize(
    ("compress", "kind"), [(zlib.compress, "zlib"), (bz2.compress, "bz2"), (lzma.compress, "xz")]
)
def test_compressed_pickles_are_inflated_scanned_and_loaded(
    tmp_path: Path, compress: Any, kind: str
) -> None:
    data = compress(pickle.dumps({"weights": [1.0, 2.0], "classes": ("a", "b")}, protocol=4))
    result = scan(tmp_path, "m.joblib", data, "joblib", policy=OPTED_IN)
    assert result.passed, result.reason
    assert kind in result.kinds
    loaded = load(tmp_path, "m.joblib", data, "joblib", policy=OPTED_IN)
    assert loaded == {"weights": [1.0, 2.0], "classes": ("a", "b")}


def test_joblib_raw_array_buffers_are_refused_with_the_reason(
    example: tuple[Pipeline, Any], tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    joblib.dump(example[0], buffer, compress=3)
    result = scan(tmp_path, "m.joblib", buffer.getvalue(), "joblib", policy=OPTED_IN)
    assert result.names[0] == "joblib.numpy_pickle.NumpyArrayWrapper"
    assert "raw array buffers" in result.reason


def test_a_skops_tree_needs_the_model_to_trust_its_types(tmp_path: Path) -> None:
    x = np.random.default_rng(1).random((40, 2))
    data = sio.dumps(DecisionTreeClassifier().fit(x, x[:, 0] > 0.5))
    refused = scan(tmp_path, "t.skops", data, "skops")
    assert set(refused.names) == {
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._tree.Tree",
    }
    trusted = ArtifactPolicy(trusted=frozenset(refused.names))
    assert scan(tmp_path, "t.skops", data, "skops", policy=trusted).passed
    tree = load(tmp_path, "t.skops", data, "skops", policy=trusted)
    assert tree.predict(x).shape == (40,)


@pytest.mark.parametrize(
    "data",
    [
        b"\x08\x07\x12\x0bmlcp-onnx" + bytes(range(256)) * 4,  # protobuf-like
        b'{"learner": {"gradient_booster": {"name": "gbtree"}}}',  # XGBoost JSON
        b"tree\nversion=v4\nnum_class=1\nobjective=binary sigmoid:1\n",  # LightGBM text
    ],
    ids=["onnx", "xgboost-json", "lightgbm-text"],
)
def test_native_formats_without_pickle_content_pass_the_scan(tmp_path: Path, data: bytes) -> None:
    result = scan(tmp_path, "m.bin", data, "onnx")
    assert (result.passed, result.kinds) == (True, ("data",))


# --- the opcode rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "cause", "reason"),
    [
        (
            stream(b"]" + op_str("system") + b"\x93"),
            "opcode_refused",
            "STACK_GLOBAL is refused: its module and name are not constant strings",
        ),
        (
            pickle.dumps([1, 2], protocol=4) + pickle.dumps(3, protocol=4),
            "malformed",
            "bytes follow the pickle's STOP",
        ),
        (pickle.dumps(complex(1, 2), protocol=0), "format", "a pickle of protocol 0 or 1"),
        (b"\x80\x04\xffjunk", "malformed", "unknown opcode 0xff"),
        (b"\x80\x04N", "malformed", "the stream ends before STOP"),
        (stream(b"\x80\x04N"), "malformed", "PROTO after the first opcode (at byte 2)"),
        (stream(b"h\x07"), "malformed", "memo key 7 that was never stored"),
        (stream(b"t"), "malformed", "TUPLE without a MARK"),
    ],
    ids=["non-constant", "trailing", "protocol-0", "unknown", "truncated", "proto", "memo", "mark"],
)
def test_opcode_patterns_outside_the_rules_are_refused(
    tmp_path: Path, data: bytes, cause: str, reason: str
) -> None:
    result = scan(tmp_path, "m.pkl", data, "pickle", policy=OPTED_IN)
    assert cause in {f.cause for f in result.findings}
    assert reason in result.reason


def test_a_global_is_judged_as_the_unpickler_resolves_it_through_the_memo(
    tmp_path: Path,
) -> None:
    # An allowed global first ("numpy" is memo 0), then a second one spelled only with
    # BINGETs: the memoised "numpy" and a memoised dotted name.
    body = call("numpy", "dtype", "f8") + b"0" + op_str("f2py.os.system") + b"0"
    body += b"h\x00h\x04\x93"
    result = scan(tmp_path, "m.pkl", stream(body), "pickle", policy=OPTED_IN)
    assert result.names == ("numpy:f2py.os.system",)


def test_the_allow_list_has_exact_pairs_only() -> None:
    assert ("numpy", "dtype") in PICKLE_GLOBALS
    assert all("." not in name for _, name in PICKLE_GLOBALS)


# --- limits, policies, the store -----------------------------------------------------------------


def test_limits_come_from_the_environment_with_sizes_in_units() -> None:
    limits = ArtifactLimits.from_env(
        {"MLCP_ARTIFACT_MAX_BYTES": "2GiB", "MLCP_ARTIFACT_MAX_RATIO": "50"}
    )
    assert (limits.max_bytes, limits.max_ratio) == (2 * GiB, 50.0)
    assert limits.max_decompressed_bytes == ArtifactLimits().max_decompressed_bytes
    with pytest.raises(ValueError, match="MLCP_ARTIFACT_MAX_DECOMPRESSED_BYTES: not a size"):
        ArtifactLimits.from_env({"MLCP_ARTIFACT_MAX_DECOMPRESSED_BYTES": "lots"})
    with pytest.raises(ValueError, match="max_bytes must be a positive number"):
        ArtifactLimits.from_env({"MLCP_ARTIFACT_MAX_BYTES": "0"})
    assert ArtifactLimits().max_schema_bytes == 16 * MiB


@pytest.mark.parametrize(
    ("entry", "pair"),
    [
        ("sklearn.tree._tree.Tree", ("sklearn.tree._tree", "Tree")),
        ("pkg.mod:Outer.Inner", ("pkg.mod", "Outer.Inner")),
    ],
)
def test_trusted_names_are_exact(entry: str, pair: tuple[str, str]) -> None:
    assert parse_trusted(entry) == pair


@pytest.mark.parametrize("entry", ["sklearn", "os.*", "a..b", "mod:", "x y.z"])
def test_prefixes_and_patterns_are_not_trusted_names(entry: str) -> None:
    with pytest.raises(ValueError, match="is not an exact name"):
        ArtifactPolicy(trusted=frozenset({entry}))


@pytest.mark.parametrize(
    ("uri", "cause", "message"),
    [
        ("s3://bucket/model.skops", "unreadable", "scheme s3:// is not served"),
        ("file://elsewhere/m.skops", "unreadable", "file URI on another host"),
        ("file:///etc/passwd", "outside_root", "is outside the artifact root"),
        ("missing.skops", "unreadable", "No such file or directory"),
        ("fifo", "unreadable", "is not a regular file"),
        ("dir", "unreadable", "is not a regular file"),
    ],
)
def test_the_file_store_refuses_what_it_must_not_read(
    tmp_path: Path, uri: str, cause: str, message: str
) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    result = scan_artifact(uri, "0" * 64, "skops", store=FileStore(tmp_path))
    assert (result.sha256, [f.cause for f in result.findings]) == (None, [cause])
    assert message in result.reason


def test_relative_uris_resolve_under_the_root(tmp_path: Path) -> None:
    (tmp_path / "ab").mkdir()
    assert FileStore(tmp_path).path("ab/c.skops") == tmp_path.resolve() / "ab" / "c.skops"
    assert isinstance(open_store(tmp_path.as_uri()), FileStore)
    with pytest.raises(ValueError, match="no store for s3://"):
        open_store("s3://bucket/prefix")
