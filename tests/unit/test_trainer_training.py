"""A training job end to end, without servers: real data files, the real sklearn example."""

from __future__ import annotations

import json
import os
import pickle
import textwrap
from pathlib import Path

import pytest

from mlcp.contracts.profile import ReferenceProfile
from mlcp.examples.sklearn import BatchFile, write_batches
from mlcp.trainer import child
from mlcp.trainer.batches import file_sha256, local_path
from mlcp.trainer.training import JobSpec, StageError, run_job
from mlcp.trainer.worker import run_in_child
from tests.builders import job_spec as spec_for

pytestmark = pytest.mark.unit

QUALITY = ("accuracy", "f1", "roc_auc", "train_rows", "holdout_rows")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[BatchFile]:
    folder = tmp_path_factory.mktemp("batches")
    csv = write_batches(folder, batches=2, rows_per_batch=300, seed=1, fmt="csv")
    parquet = write_batches(
        folder, batches=1, rows_per_batch=300, seed=2, fmt="parquet", prefix="pq"
    )
    return csv + parquet


def test_a_job_trains_evaluates_profiles_and_stores_the_artifact(
    files: list[BatchFile], tmp_path: Path
) -> None:
    result = run_job(spec_for(files, tmp_path))
    metrics = result["metrics"]
    assert metrics["accuracy"] > 0.9
    assert metrics["roc_auc"] > 0.9
    assert 0 < metrics["f1"] <= 1
    assert metrics["latency_p95_ms"] >= metrics["latency_p50_ms"] > 0
    assert metrics["train_rows"] + metrics["holdout_rows"] == 900
    artifact = result["artifact"]
    path = local_path(artifact["uri"])
    assert path is not None
    assert path.is_file()
    assert path.name == f"{artifact['sha256']}.skops", "content-addressed by sha256"
    assert file_sha256(path) == artifact["sha256"]
    assert artifact["format"] == "skops"
    profile = ReferenceProfile.model_validate(result["reference_profile"])
    assert set(profile.features) == {f["name"] for f in result["feature_schema"]}
    assert len(profile.features) == 30
    assert "churned" not in profile.features
    [dataset] = result["datasets"]
    assert dataset["batch_ids"] == [f.batch_id for f in files]
    assert dataset["rows"] == 900
    assert result["environment"]["packages"]["scikit-learn"]
    assert result["baseline"] is None


def test_same_batches_and_seed_give_identical_metrics(
    files: list[BatchFile], tmp_path: Path
) -> None:
    first = run_job(spec_for(files, tmp_path))["metrics"]
    second = run_job(spec_for(files, tmp_path))["metrics"]
    assert {k: first[k] for k in QUALITY} == {k: second[k] for k in QUALITY}


def test_the_production_version_is_scored_on_the_same_holdout(
    files: list[BatchFile], tmp_path: Path
) -> None:
    from mlcp.trainer.training import ArtifactSpec

    champion = run_job(spec_for(files[:1], tmp_path))["artifact"]
    spec = spec_for(files, tmp_path)
    spec = JobSpec(
        **{
            **spec.__dict__,
            "baseline": ArtifactSpec("1.0.0", champion["uri"], champion["sha256"], "skops"),
        }
    )
    result = run_job(spec)
    assert result["baseline"]["version"] == "1.0.0"
    assert 0.5 < result["baseline"]["metrics"]["accuracy"] <= 1.0
    assert result["baseline"]["metrics"]["latency_p95_ms"] > 0


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_a_hostile_champion_is_refused_by_the_restricted_loader_and_never_runs(
    files: list[BatchFile], tmp_path: Path, allow_pickle: bool
) -> None:
    """A production artifact that slipped past the gate: the challenger is still trained and
    stored, the baseline is missing with the reason, and the payload never ran."""
    from mlcp.artifacts import ArtifactPolicy
    from mlcp.trainer.training import ArtifactSpec
    from tests.builders import reduce_pickle, sha256_of, touch

    marker = tmp_path / "payload-ran"
    evil = tmp_path / "artifacts" / "evil.pkl"
    evil.parent.mkdir(parents=True)
    evil.write_bytes(reduce_pickle(os.system, touch(marker)))
    spec = JobSpec(
        **{
            **spec_for(files, tmp_path).__dict__,
            "baseline": ArtifactSpec("1.0.0", evil.as_uri(), sha256_of(evil), "pickle"),
            "artifact_policy": ArtifactPolicy(allow_pickle=allow_pickle),
        }
    )
    result = run_job(spec)
    assert result["baseline"] is None
    assert result["baseline_error"].startswith(
        "ArtifactRefused: global posix.system is refused: it can run code (in evil.pkl)"
    )
    assert result["artifact"]["format"] == "skops"
    assert not marker.exists()


def test_a_batch_whose_checksum_changed_fails_the_load_stage(
    files: list[BatchFile], tmp_path: Path
) -> None:
    tampered = BatchFile(**{**files[0].__dict__, "sha256": "0" * 64})
    with pytest.raises(StageError) as info:
        run_job(spec_for([tampered, *files[1:]], tmp_path))
    assert info.value.stage == "load_data"
    assert "sha256 mismatch" in str(info.value)
    assert files[0].batch_id in str(info.value)


def test_local_paths_and_file_uris_are_readable_remote_ones_are_not(tmp_path: Path) -> None:
    assert local_path("file:///data/a%20b.csv") == Path("/data/a b.csv")
    assert local_path("/data/x.parquet") == Path("/data/x.parquet")
    assert local_path("s3://bucket/x.csv") is None
    assert local_path("file://otherhost/x.csv") is None


@pytest.fixture
def misbehaving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "misbehaving_model.py").write_text(
        textwrap.dedent(
            """
            import os, time

            def hang(X, y, params):
                time.sleep(600)

            def crash(X, y, params):
                os._exit(13)

            def boom(X, y, params):
                raise RuntimeError("bad hyper-parameter")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned children inherit sys.path
    return "misbehaving_model"


async def test_a_hung_training_is_killed_at_its_timeout(
    files: list[BatchFile], tmp_path: Path, misbehaving: str
) -> None:
    outcome, payload = await run_in_child(spec_for(files, tmp_path, f"{misbehaving}:hang"), 8.0)
    assert outcome.timed_out
    assert payload is None


async def test_a_crashing_training_is_reported_not_fatal(
    files: list[BatchFile], tmp_path: Path, misbehaving: str
) -> None:
    outcome, payload = await run_in_child(spec_for(files, tmp_path, f"{misbehaving}:crash"), 120)
    assert payload is None
    assert outcome.exitcode == 13
    assert not outcome.timed_out


def test_an_exception_in_the_entrypoint_becomes_a_failed_result(
    files: list[BatchFile], tmp_path: Path, misbehaving: str
) -> None:
    # The child's main, in-process: what it writes for the worker when user code raises.
    spec_path, result_path = tmp_path / "spec.pickle", tmp_path / "result.json"
    spec_path.write_bytes(pickle.dumps((spec_for(files, tmp_path, f"{misbehaving}:boom"), [])))
    assert child.main([str(spec_path), str(result_path), str(os.getppid())]) == 0
    status, body = json.loads(result_path.read_text())
    assert status == "failed"
    assert body["stage"] == "train"
    assert body["error_type"] == "RuntimeError"
    assert "bad hyper-parameter" in body["error"]


def test_code_version_follows_the_training_file_not_the_repository_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from mlcp.trainer.training import code_version

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q")
    (tmp_path / "codever_model.py").write_text("def train(X, y, params):\n    return None\n")
    git("add", "codever_model.py")
    git("commit", "-qm", "model")
    model_commit = git("rev-parse", "HEAD")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "codever_model", raising=False)

    assert code_version("codever_model:train") == f"git:{model_commit[:12]}"
    (tmp_path / "README").write_text("unrelated\n")
    git("add", "README")
    git("commit", "-qm", "docs")
    assert code_version("codever_model:train") == f"git:{model_commit[:12]}", (
        "a commit elsewhere is not a change of the training code"
    )
    (tmp_path / "codever_model.py").write_text("def train(X, y, params):\n    return 1\n")
    assert code_version("codever_model:train") == f"git:{model_commit[:12]}-dirty"
