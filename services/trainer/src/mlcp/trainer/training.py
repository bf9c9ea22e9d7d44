"""One training job, as the child process runs it: data → entrypoint → evaluation → artifact.

Everything here is synchronous and may be slow, crash or hang: the worker runs ``run_job`` in a
separate process with a timeout. Any failure is a ``StageError`` naming the stage
('load_data', 'train', 'evaluate', 'baseline', 'profile', 'save_artifact').
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from sklearn.base import is_classifier  # type: ignore[import-untyped]
from sklearn.metrics import (  # type: ignore[import-untyped]
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]

from mlcp.artifacts import ArtifactLimits, ArtifactPolicy, FileStore, load_artifact
from mlcp.contracts.common import DatasetRef
from mlcp.contracts.types import PACKAGE_PATTERN
from mlcp.policy.target import DEFAULT_TARGET, LabelMismatch, Target
from mlcp.trainer.batches import BatchError, file_sha256, load_batch
from mlcp.trainer.profile import reference_profile

HOLDOUT_FRACTION = 0.2
LATENCY_ROWS = 200
ARTIFACT_FORMAT = "skops"


class StageError(Exception):
    """A job failed at a named stage."""

    def __init__(self, stage: str, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.error_type = error_type


@dataclass(frozen=True)
class BatchSpec:
    """One ledger batch to train on."""

    dataset: str
    batch_id: str
    uri: str
    sha256: str
    rows: int
    completeness: float
    format: str | None = None
    duplicates: int = 0
    """Re-announcements of the same content (not counted again), for the lineage."""


@dataclass(frozen=True)
class ArtifactSpec:
    """A stored artifact (the production version's, for the baseline)."""

    version: str
    uri: str
    sha256: str
    format: str


@dataclass(frozen=True)
class JobSpec:
    """Everything a training child needs; picklable."""

    run_id: str
    model: str
    entrypoint: str
    params: dict[str, Any]
    label: str
    features: list[str] | None
    batches: tuple[BatchSpec, ...]
    artifact_root: str
    baseline: ArtifactSpec | None = None
    target: Target = DEFAULT_TARGET
    """How predictions are compared with labels (``accuracy``), as the monitor compares them."""
    artifact_policy: ArtifactPolicy = field(default_factory=ArtifactPolicy)
    """The model's artifact rules (``models.<name>.artifact``), for loading the baseline."""
    artifact_limits: ArtifactLimits = field(default_factory=ArtifactLimits)


def resolve_entrypoint(entrypoint: str) -> Callable[..., Any]:
    """Import ``module:callable``."""
    module_name, _, attr = entrypoint.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise AttributeError(f"{entrypoint}: {module_name} has no callable {attr!r}")
    return fn  # type: ignore[no-any-return]


def load_frame(spec: JobSpec) -> Any:
    """Concatenate the batches in ledger order, verifying each digest."""
    frames = []
    for batch in spec.batches:
        try:
            frames.append(load_batch(batch.uri, batch.sha256, batch.format))
        except BatchError as exc:
            raise StageError("load_data", f"batch {batch.batch_id}: {exc}", "BatchError") from exc
    if not frames:
        raise StageError("load_data", f"dataset of model {spec.model} has no batches")
    frame = pd.concat(frames, ignore_index=True)
    if spec.label not in frame.columns:
        raise StageError("load_data", f"label column {spec.label!r} is not in the data")
    return frame


def split_columns(frame: Any, spec: JobSpec) -> tuple[Any, Any]:
    """Features and label, as the config names them."""
    if spec.features is None:
        features = [c for c in frame.columns if c != spec.label]
    else:
        missing = [c for c in spec.features if c not in frame.columns]
        if missing:
            raise StageError("load_data", f"feature columns missing from the data: {missing[:5]}")
        features = list(spec.features)
    frame = frame.dropna(subset=[spec.label])
    return frame[features], frame[spec.label]


def holdout_split(X: Any, y: Any, seed: int) -> tuple[Any, Any, Any, Any]:
    """A seeded 80/20 split, stratified when every class has at least two rows."""
    counts = y.value_counts()
    stratify = y if len(counts) > 1 and counts.min() >= 2 and len(counts) < len(y) / 2 else None
    try:
        return train_test_split(  # type: ignore[no-any-return]
            X, y, test_size=HOLDOUT_FRACTION, random_state=seed, stratify=stratify
        )
    except ValueError:
        return train_test_split(  # type: ignore[no-any-return]
            X, y, test_size=HOLDOUT_FRACTION, random_state=seed
        )


def quality_metrics(
    model: Any, X: Any, y: Any, target: Target = DEFAULT_TARGET
) -> dict[str, float]:
    """Holdout metrics: accuracy, F1 and ROC AUC for classifiers; R², RMSE, MAE for regressors
    (with ``accuracy`` = share within the tolerance when the target is a regression).

    ``accuracy`` is the model's ``target`` rule applied to each (prediction, label) pair — the
    same function the monitor scores live traffic with, so offline and live accuracy agree on
    what a correct prediction is. A value that does not fit the target fails the stage.
    """
    pred = model.predict(X)
    try:
        accuracy = target.accuracy(list(pred), list(y))
    except LabelMismatch as exc:
        raise StageError(
            "evaluate",
            f"holdout values do not fit the model's target ({target.describe()}): {exc}",
            "LabelMismatch",
        ) from exc
    if target.kind == "regression" or not is_classifier(model):
        out = {
            "r2": float(r2_score(y, pred)),
            "rmse": float(np.sqrt(mean_squared_error(y, pred))),
            "mae": float(mean_absolute_error(y, pred)),
        }
        if target.kind == "regression" and accuracy is not None:
            out["accuracy"] = accuracy
        return out
    out = {"accuracy": float(accuracy if accuracy is not None else 0.0)}
    classes = list(getattr(model, "classes_", sorted(pd.unique(y))))
    binary = len(classes) == 2
    if binary:
        out["f1"] = float(f1_score(y, pred, pos_label=classes[1], average="binary"))
    else:
        out["f1_macro"] = float(f1_score(y, pred, average="macro"))
    if hasattr(model, "predict_proba") and len(pd.unique(y)) > 1:
        proba = model.predict_proba(X)
        try:
            if binary:
                out["roc_auc"] = float(roc_auc_score(y, proba[:, 1]))
            else:
                out["roc_auc_ovr"] = float(
                    roc_auc_score(y, proba, multi_class="ovr", labels=classes)
                )
        except ValueError:
            pass  # a class missing from the holdout: AUC is undefined, not an error
    return out


def latency_metrics(model: Any, X: Any) -> dict[str, float]:
    """p50 / p95 of one-row ``predict`` calls on holdout rows, in milliseconds."""
    rows = min(LATENCY_ROWS, len(X))
    timings = []
    for i in range(rows):
        row = X.iloc[[i]]
        started = time.perf_counter()
        model.predict(row)
        timings.append((time.perf_counter() - started) * 1000.0)
    if not timings:
        return {}
    return {
        "latency_p50_ms": float(np.percentile(timings, 50)),
        "latency_p95_ms": float(np.percentile(timings, 95)),
    }


def score(model: Any, X: Any, y: Any, target: Target = DEFAULT_TARGET) -> dict[str, float]:
    """Quality and latency metrics of ``model`` on a holdout."""
    return {**quality_metrics(model, X, y, target), **latency_metrics(model, X)}


def load_baseline(spec: JobSpec) -> Any:
    """The production version's model, through the one restricted loader (sha256 verified,
    scanned, the model's allow-list): a champion that slipped past the gate cannot run code
    here either."""
    assert spec.baseline is not None
    return load_artifact(
        spec.baseline.uri,
        spec.baseline.sha256,
        spec.baseline.format,
        store=FileStore(Path(spec.artifact_root)),
        policy=spec.artifact_policy,
        limits=spec.artifact_limits,
    )


def save_artifact(model: Any, root: Path) -> dict[str, Any]:
    """Store the model as skops, content-addressed: ``<root>/sha256/<ab>/<digest>.skops``."""
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=".skops")
    os.close(fd)
    tmp = Path(tmp_name)
    import skops.io as sio  # type: ignore[import-untyped]  # slow import (it walks scikit-learn)

    try:
        sio.dump(model, tmp)
        digest = file_sha256(tmp)
        final = root / "sha256" / digest[:2] / f"{digest}.{ARTIFACT_FORMAT}"
        final.parent.mkdir(parents=True, exist_ok=True)
        size = tmp.stat().st_size
        os.replace(tmp, final)  # same content, same name: a retry simply rewrites it
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "uri": final.resolve().as_uri(),
        "sha256": digest,
        "format": ARTIFACT_FORMAT,
        "size_bytes": size,
    }


def code_version(entrypoint: str) -> str:
    """The training code's version: git commit of its file (``-dirty`` if edited), else a digest."""
    module_name = entrypoint.partition(":")[0]
    try:
        source = inspect.getsourcefile(importlib.import_module(module_name))
    except (TypeError, ImportError):
        source = None
    if source is None:
        return "unknown"
    path = Path(source)
    try:
        # The last commit that touched the file, not HEAD: a commit elsewhere in the repository
        # does not change the training code, and must not turn a data-only retrain into a
        # minor version bump.
        head = subprocess.run(
            ["git", "log", "-1", "--format=%H", "--", path.name],
            cwd=path.parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        if not head:  # not tracked by git
            raise subprocess.SubprocessError(f"{path} is not in a git commit")
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", path.name],
            cwd=path.parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return f"git:{head[:12]}" + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def environment() -> dict[str, Any]:
    """Python, platform and every installed distribution with its version."""
    import re

    valid = re.compile(PACKAGE_PATTERN)
    packages = {}
    for dist in metadata.distributions():
        name, version = dist.metadata["Name"], dist.version
        if name and version and valid.match(name) and " " not in version:
            packages[name] = version
    return {
        "python": platform.python_version(),
        "packages": dict(sorted(packages.items())),
        "platform": platform.platform()[:256],
    }


def _stage(stage: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except StageError:
        raise
    except Exception as exc:
        raise StageError(stage, f"{type(exc).__name__}: {exc}", type(exc).__name__) from exc


def run_job(spec: JobSpec) -> dict[str, Any]:
    """Train, evaluate and store one model; returns what the run records and publishes."""
    started = time.perf_counter()
    seed = int(spec.params.get("seed", 0))
    frame = load_frame(spec)
    X, y = split_columns(frame, spec)
    X_train, X_test, y_train, y_test = _stage("load_data", lambda: holdout_split(X, y, seed))
    train = _stage("train", lambda: resolve_entrypoint(spec.entrypoint))
    model = _stage("train", lambda: train(X_train, y_train, dict(spec.params)))
    if not hasattr(model, "predict"):
        raise StageError("train", f"{spec.entrypoint} returned {type(model).__name__}, no predict")
    metrics = _stage("evaluate", lambda: score(model, X_test, y_test, spec.target))
    metrics["train_rows"] = float(len(X_train))
    metrics["holdout_rows"] = float(len(X_test))
    baseline = None
    baseline_error = None
    if spec.baseline is not None:
        # A champion that cannot be scored (other features, missing artifact) must not block the
        # challenger: the run records why and the baseline gate sees no baseline.
        try:
            champion = load_baseline(spec)
            baseline = {
                "version": spec.baseline.version,
                "metrics": score(champion, X_test, y_test, spec.target),
            }
        except Exception as exc:
            baseline_error = f"{type(exc).__name__}: {exc}"
    profile = _stage("profile", lambda: reference_profile(X_train, seed=seed))
    artifact = _stage("save_artifact", lambda: save_artifact(model, Path(spec.artifact_root)))
    by_dataset: dict[str, list[BatchSpec]] = {}
    for batch in spec.batches:
        by_dataset.setdefault(batch.dataset, []).append(batch)
    datasets = []
    for name, batches in by_dataset.items():
        rows = sum(b.rows for b in batches)
        completeness = sum(b.completeness * b.rows for b in batches) / rows if rows else 1.0
        datasets.append(
            {
                "dataset": name,
                "batch_ids": [b.batch_id for b in batches],
                "sha256": DatasetRef.fingerprint(b.sha256 for b in batches),
                "rows": rows,
                "completeness": min(1.0, max(0.0, completeness)),
                "batches": [
                    {
                        "batch_id": b.batch_id,
                        "uri": b.uri,
                        "rows": b.rows,
                        "sha256": b.sha256,
                        "duplicates": b.duplicates,
                    }
                    for b in batches
                ],
            }
        )
    return {
        "params": dict(spec.params),
        "seed": seed,
        "metrics": metrics,
        "baseline": baseline,
        "baseline_error": baseline_error,
        "datasets": datasets,
        "batches": [
            {"dataset": b.dataset, "batch_id": b.batch_id, "sha256": b.sha256, "rows": b.rows}
            for b in spec.batches
        ],
        "feature_schema": [{"name": str(c), "dtype": str(X[c].dtype)} for c in X.columns],
        "label": spec.label,
        "target": spec.target.model_dump(mode="json"),
        "reference_profile": profile.model_dump(mode="json"),
        "artifact": artifact,
        "entrypoint": spec.entrypoint,
        "code_version": code_version(spec.entrypoint),
        "environment": environment(),
        "duration_s": time.perf_counter() - started,
    }
