"""A training job end to end, without servers: real data files, the real sklearn example."""

from __future__ import annotations

import json
import os
import pickle
import textwrap
from pathlib import Path

import pytest

from mlcp.contracts import DatasetRef
from mlcp.contracts.profile import ReferenceProfile
from mlcp.examples.sklearn import BatchFile, write_batches
from mlcp.policy.target import Target
from mlcp.trainer import child
from mlcp.trainer.batches import file_sha256, local_path
from mlcp.trainer.training import JobSpec, StageError, quality_metrics, run_job
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
    # Every batch with its uri, rows and digest; the dataset digest is their fingerprint.
    assert [(b["batch_id"], b["uri"], b["rows"], b["sha256"]) for b in dataset["batches"]] == [
        (f.batch_id, f.uri, f.rows, f.sha256) for f in files
    ]
    assert DatasetRef.model_validate(dataset).sha256 == DatasetRef.fingerprint(
        f.sha256 for f in files
    )
    assert result["target"]["kind"] == "classification"
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


class Answers:
    """A fitted model stand-in that answers given values (as numpy arrays, like sklearn)."""

    def __init__(self, values: list[object], *, classifier: bool = True) -> None:
        self._values = values
        self._estimator_type = "classifier" if classifier else "regressor"

    def predict(self, X: object) -> object:
        import numpy as np

        return np.asarray(self._values)

    def __sklearn_tags__(self) -> object:
        from sklearn.utils import Tags, TargetTags  # type: ignore[import-untyped]

        tags = Tags(estimator_type=self._estimator_type, target_tags=TargetTags(required=True))
        return tags


def test_holdout_accuracy_uses_the_same_rule_as_the_monitor() -> None:
    """The offline accuracy a version is registered with and the live accuracy the monitor
    judges it by are the same function of the same pairs (mlcp.policy.target)."""
    import pandas as pd

    labels = pd.Series([1, 0, 1, 1])
    answers = [True, False, True, False]  # a model answering booleans for integer labels
    mapped = Target(type="integer", mapping={True: 1, False: 0})
    assert quality_metrics(Answers(answers), None, labels, mapped)["accuracy"] == 0.75
    assert mapped.accuracy(answers, labels.tolist()) == 0.75
    default = quality_metrics(Answers(answers), None, labels)["accuracy"]
    assert default == 0.75, "true and 1 agree under the default target too"
    regression = Target(kind="regression", tolerance=0.5)
    metrics = quality_metrics(
        Answers([1.2, 2.9, 3.0, 5.0], classifier=False),
        None,
        pd.Series([1.0, 2.0, 3.4, 4.6]),
        regression,
    )
    assert metrics["accuracy"] == 0.75
    assert {"r2", "rmse", "mae"} <= set(metrics)


def test_holdout_values_that_do_not_fit_the_target_fail_the_evaluate_stage() -> None:
    import pandas as pd

    strict = Target(type="integer")
    with pytest.raises(StageError) as caught:
        quality_metrics(Answers(["yes", "no"]), None, pd.Series([1, 0]), strict)
    assert caught.value.stage == "evaluate"
    assert '"yes" is not an integer' in str(caught.value)
