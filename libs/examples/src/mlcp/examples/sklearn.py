"""A real scikit-learn model on a dataset scikit-learn ships, so that everything runs offline.

``train_logistic`` is the entrypoint the example platform config names
(``train: mlcp.examples.sklearn:train_logistic``). ``write_batches`` writes rows drawn from the
Wisconsin breast-cancer dataset (569 rows, 30 numeric features, binary label) as CSV or Parquet
batch files, with the DataArrived event that announces each one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from sklearn.datasets import load_breast_cancer  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]
from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

from mlcp.contracts import DataArrived


def train_logistic(X: pd.DataFrame, y: pd.Series, params: Mapping[str, Any]) -> Pipeline:
    """Standardise the features, then fit a logistic regression (params: C, max_iter, seed)."""
    model = Pipeline(
        [
            ("scale", StandardScaler()),
            (
                "clf",
                LogisticRegression(
                    C=float(params.get("C", 1.0)),
                    max_iter=int(params.get("max_iter", 200)),
                    random_state=int(params.get("seed", 0)),
                ),
            ),
        ]
    )
    return model.fit(X, y)


def make_rows(n: int, *, seed: int = 0, label: str = "churned", shift: float = 0.0) -> pd.DataFrame:
    """``n`` rows drawn (with replacement, 1% jitter) from the breast-cancer data.

    ``shift`` moves every feature by that many of its standard deviations (to simulate drift).
    """
    data = load_breast_cancer(as_frame=True)
    frame: pd.DataFrame = data.frame.rename(columns={"target": label})
    rng = np.random.default_rng(seed)
    rows = frame.iloc[rng.integers(0, len(frame), size=n)].reset_index(drop=True)
    features = [c for c in rows.columns if c != label]
    std = frame[features].std().to_numpy()
    noise = rng.normal(0.0, 0.01, size=(n, len(features))) * std
    rows[features] = rows[features].to_numpy() + noise + shift * std
    return rows


@dataclass(frozen=True)
class BatchFile:
    """A batch file written by ``write_batches``."""

    batch_id: str
    path: Path
    rows: int
    sha256: str
    completeness: float
    format: str

    @property
    def uri(self) -> str:
        return self.path.resolve().as_uri()

    def event(self, dataset: str) -> DataArrived:
        """The DataArrived that announces this batch."""
        return DataArrived(
            dataset=dataset,
            batch_id=self.batch_id,
            uri=self.uri,
            rows=self.rows,
            sha256=self.sha256,
            completeness=self.completeness,
            format=self.format,
        )


def write_batches(
    directory: Path,
    *,
    batches: int,
    rows_per_batch: int,
    seed: int = 0,
    label: str = "churned",
    fmt: str = "csv",
    prefix: str = "batch",
) -> list[BatchFile]:
    """Write ``batches`` files of ``rows_per_batch`` rows (CSV or Parquet) into ``directory``."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(batches):
        frame = make_rows(rows_per_batch, seed=seed * 1_000_003 + i, label=label)
        path = directory / f"{prefix}-{i:04d}.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        completeness = float(frame.notna().to_numpy().mean()) if frame.size else 1.0
        out.append(BatchFile(f"{prefix}-{i:04d}", path, len(frame), digest, completeness, fmt))
    return out
