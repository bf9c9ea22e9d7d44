"""The security scan on real files: a malicious pickle is refused without ever being loaded,
hashes are checked, skops archives are audited, paths stay inside MLCP_ARTIFACT_ROOT."""

from __future__ import annotations

import fractions
import hashlib
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from mlcp.contracts import ArtifactRef
from mlcp.gatekeeper import domain
from mlcp.gatekeeper.scan import resolve, scan_artifact

pytestmark = pytest.mark.unit


class ShellOnLoad:
    """Unpickling this runs a shell command (the classic pickle attack)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def malicious_pickle(path: Path, marker: Path) -> bytes:
    """Write a pickle whose loading would create ``marker``; returns its bytes."""
    data = pickle.dumps({"model": ShellOnLoad(f"touch {marker}")}, protocol=4)
    path.write_bytes(data)
    return data


def ref(path: Path, fmt: str, sha: str | None = None, uri: str | None = None) -> ArtifactRef:
    digest = sha or hashlib.sha256(path.read_bytes()).hexdigest()
    return ArtifactRef(uri=uri or path.as_uri(), sha256=digest, format=fmt)


def fitted(model: type[LogisticRegression] | type[DecisionTreeClassifier]) -> object:
    rng = np.random.default_rng(7)
    x = rng.random((60, 3))
    return model().fit(x, (x[:, 0] > 0.5).astype(int))


def test_the_malicious_pickle_is_real(tmp_path: Path) -> None:
    """Loaded (in a separate process) it does run its command: the scan tests below mean it."""
    marker = tmp_path / "proof"
    malicious_pickle(tmp_path / "evil.pkl", marker)
    code = f"import pickle; pickle.load(open({str(tmp_path / 'evil.pkl')!r}, 'rb'))"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert marker.exists()


@pytest.mark.parametrize("fmt", ["pickle", "joblib", "onnx"])
def test_malicious_pickle_is_rejected_without_loading(tmp_path: Path, fmt: str) -> None:
    marker = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    path = tmp_path / "model.bin"
    malicious_pickle(path, marker)
    report = scan_artifact(ref(path, fmt), tmp_path)
    assert report.unsafe == ("posix.system",)
    passed, evidence, reason = domain.evaluate(_scan_stage(), _candidate(), report)
    assert not passed
    assert reason == "picklescan: unsafe posix.system"
    assert evidence[1].observed == 1.0
    assert not marker.exists()


def test_compressed_joblib_with_a_payload_is_rejected(tmp_path: Path) -> None:
    marker = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    path = tmp_path / "model.joblib"
    joblib.dump({"model": ShellOnLoad(f"touch {marker}")}, path, compress=3)
    report = scan_artifact(ref(path, "joblib"), tmp_path)
    assert report.unsafe == ("posix.system",)
    assert not marker.exists()


def test_plain_pickle_of_a_sklearn_model_passes(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(fitted(LogisticRegression), protocol=5))
    report = scan_artifact(ref(path, "pickle"), tmp_path)
    assert (report.unsafe, report.error) == ((), None)
    assert domain.evaluate(_scan_stage(), _candidate(), report)[0]


def test_pickle_referencing_an_untrusted_module_fails_unless_trusted(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(fractions.Fraction(1, 3), protocol=4))
    assert scan_artifact(ref(path, "pickle"), tmp_path).unsafe == ("fractions.Fraction",)
    assert scan_artifact(ref(path, "pickle"), tmp_path, trusted=["fractions"]).unsafe == ()


def test_uncompressed_joblib_with_arrays_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(fitted(LogisticRegression), path)
    report = scan_artifact(ref(path, "joblib"), tmp_path)
    assert report.error == "the pickle stream could not be parsed to its end"


def test_skops_artifact_passes_and_untrusted_types_fail(tmp_path: Path) -> None:
    good = tmp_path / "lr.skops"
    sio.dump(fitted(LogisticRegression), good)
    report = scan_artifact(ref(good, "skops"), tmp_path)
    assert (report.scanner, report.unsafe, report.error) == ("skops", (), None)
    tree = tmp_path / "tree.skops"
    sio.dump(fitted(DecisionTreeClassifier), tree)
    assert scan_artifact(ref(tree, "skops"), tmp_path).unsafe == ("sklearn.tree._tree.Tree",)
    trusted = scan_artifact(ref(tree, "skops"), tmp_path, trusted=["sklearn.tree._tree.Tree"])
    assert trusted.unsafe == ()


def test_a_hash_mismatch_is_reported_before_anything_else(tmp_path: Path) -> None:
    path = tmp_path / "lr.skops"
    sio.dump(fitted(LogisticRegression), path)
    report = scan_artifact(ref(path, "skops", sha="0" * 64), tmp_path)
    assert report.actual_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not domain.evaluate(_scan_stage(), _candidate(), report)[0]


def test_a_non_pickle_declared_as_pickle_fails(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"hello, not a pickle")
    assert scan_artifact(ref(path, "pickle"), tmp_path).error == (
        "not a pickle stream (protocol >= 2)"
    )


@pytest.mark.parametrize(
    ("uri", "error"),
    [
        ("s3://bucket/model.pkl", "scheme s3:// is not supported"),
        ("file:///etc/passwd", "is outside MLCP_ARTIFACT_ROOT"),
        ("../outside.pkl", "is outside MLCP_ARTIFACT_ROOT"),
        ("missing.pkl", "No such file or directory"),
    ],
)
def test_artifacts_are_only_read_inside_the_artifact_root(
    tmp_path: Path, uri: str, error: str
) -> None:
    report = scan_artifact(ArtifactRef(uri=uri, sha256="0" * 64, format="pickle"), tmp_path)
    assert report.actual_sha256 is None
    assert error in (report.error or "")


def test_relative_paths_resolve_under_the_root(tmp_path: Path) -> None:
    (tmp_path / "ab").mkdir()
    assert resolve("ab/c.skops", tmp_path) == (tmp_path / "ab" / "c.skops").resolve()


def _scan_stage() -> domain.GateStage:
    return domain.GateStage(name="scan", kind="security_scan")


def _candidate() -> domain.ModelVersionRegistered:
    from tests.unit.test_gatekeeper_domain import registered

    return registered()
