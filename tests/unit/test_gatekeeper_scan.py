"""The security_scan stage on real files, through mlcp.artifacts: its verdict becomes evidence and
a GateFailed reason that names the cause; the artifact is never loaded. (The scanner itself, and
the whole hostile corpus, are tested in test_artifacts_corpus.py / test_artifacts_scan.py.)"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from mlcp.artifacts import ArtifactLimits, ArtifactPolicy, FileStore
from mlcp.contracts import ArtifactRef
from mlcp.gatekeeper import domain
from mlcp.gatekeeper.scan import scan
from tests.builders import reduce_pickle, touch

pytestmark = pytest.mark.unit


def ref(path: Path, fmt: str, sha: str | None = None, uri: str | None = None) -> ArtifactRef:
    digest = sha or hashlib.sha256(path.read_bytes()).hexdigest()
    return ArtifactRef(uri=uri or path.as_uri(), sha256=digest, format=fmt)


def run(artifact: ArtifactRef, root: Path, policy: ArtifactPolicy | None = None) -> tuple:
    report = scan(artifact, FileStore(root), policy or ArtifactPolicy(), ArtifactLimits())
    passed, evidence, reason = domain.evaluate(_scan_stage(), _candidate(), report)
    return report, passed, evidence, reason


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_a_malicious_pickle_fails_with_the_cause_and_never_runs(
    tmp_path: Path, allow_pickle: bool
) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(reduce_pickle(os.system, touch(marker)))
    report, passed, evidence, reason = run(
        ref(path, "pickle"), tmp_path, ArtifactPolicy(allow_pickle=allow_pickle)
    )
    assert not passed
    assert report.unsafe == ("posix.system",)
    assert reason.startswith("global posix.system is refused: it can run code (in evil.pkl)")
    assert ("does not allow pickle" in reason) is not allow_pickle
    assert evidence[1].observed == 1.0
    assert not marker.exists()


def test_a_skops_artifact_passes_with_both_opinions(tmp_path: Path) -> None:
    path = tmp_path / "lr.skops"
    x = np.random.default_rng(7).random((60, 3))
    sio.dump(LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int)), path)
    report, passed, evidence, _ = run(ref(path, "skops"), tmp_path)
    assert passed
    assert report.scanner == "allow-list+skops"
    assert evidence[1].detail == "allow-list+skops: nothing unsafe"


def test_a_hash_mismatch_is_reported_as_such(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    report, passed, _, reason = run(ref(path, "pickle", sha="0" * 64), tmp_path)
    assert report.actual_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not passed
    assert reason.startswith(f"sha256 {report.actual_sha256[:12]}… != registered 000000000000…")


@pytest.mark.parametrize(
    ("uri", "error"),
    [
        ("s3://bucket/model.pkl", "scheme s3:// is not served by the file store"),
        ("../outside.pkl", "is outside the artifact root"),
        ("missing.pkl", "No such file or directory"),
    ],
)
def test_artifacts_are_only_read_inside_the_artifact_root(
    tmp_path: Path, uri: str, error: str
) -> None:
    artifact = ArtifactRef(uri=uri, sha256="0" * 64, format="pickle")
    report, passed, _, reason = run(artifact, tmp_path)
    assert (report.actual_sha256, passed) == (None, False)
    assert reason.startswith("artifact unreadable: ")
    assert error in reason


def _scan_stage() -> domain.GateStage:
    return domain.GateStage(name="scan", kind="security_scan")


def _candidate() -> domain.ModelVersionRegistered:
    from tests.unit.test_gatekeeper_domain import registered

    return registered()
