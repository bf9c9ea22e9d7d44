"""One valid, realistic ``data`` payload (JSON form) per event type."""

import hashlib
from typing import Any

SHA_A = "a" * 64
SHA_B = "0123456789abcdef" * 4
T0 = "2025-03-01T12:00:00Z"
T1 = "2025-03-01T12:30:00Z"

FEATURE_SCHEMA = [
    {"name": "tenure_months", "dtype": "int64"},
    {"name": "plan", "dtype": "object"},
]
PROFILE = {
    "rows": 1200,
    "features": {
        "tenure_months": {
            "kind": "numeric",
            "count": 1190,
            "missing": 10,
            "min": 0.0,
            "max": 72.0,
            "mean": 30.5,
            "std": 20.1,
            "bin_edges": [0.0, 24.0, 48.0, 72.0],
            "bin_proportions": [0.4, 0.35, 0.25],
            "quantiles": [{"q": 0.5, "value": 28.0}, {"q": 0.9, "value": 66.0}],
            "sample": [1.0, 12.0, 40.0, 71.0],
        },
        "plan": {
            "kind": "categorical",
            "count": 1200,
            "frequencies": {"basic": 0.6, "pro": 0.3},
            "other": 0.1,
        },
    },
}
ARTIFACT = {
    "uri": "file:///var/mlcp/artifacts/churn/run-7.skops",
    "sha256": SHA_B,
    "format": "skops",
}
BATCH_SHAS = [hashlib.sha256(b"batch a").hexdigest(), hashlib.sha256(b"batch b").hexdigest()]
DATASETS = [
    {
        "dataset": "churn-events",
        "batch_ids": ["2025-03-01-a", "2025-03-01-b"],
        # The dataset digest, by the recipe in the schema's description.
        "sha256": hashlib.sha256("".join(f"{h}\n" for h in BATCH_SHAS).encode()).hexdigest(),
        "rows": 1200,
        "completeness": 0.99,
        "batches": [
            {
                "batch_id": "2025-03-01-a",
                "uri": "s3://lake/churn/2025-03-01-a.parquet",
                "rows": 700,
                "sha256": BATCH_SHAS[0],
                "duplicates": 0,
            },
            {
                "batch_id": "2025-03-01-b",
                "uri": "s3://lake/churn/2025-03-01-b.parquet",
                "rows": 500,
                "sha256": BATCH_SHAS[1],
                "duplicates": 2,
            },
        ],
    }
]
WINDOW = {"start": T0, "end": T1, "size": 600}
EVIDENCE = [
    {"metric": "accuracy", "observed": 0.94, "operator": ">=", "threshold": 0.92, "satisfied": True}
]

EXAMPLES: dict[str, dict[str, Any]] = {
    "mlcp.data.arrived.v1": {
        "dataset": "churn-events",
        "batch_id": "2025-03-01-a",
        "uri": "s3://lake/churn/2025-03-01-a.parquet",
        "rows": 600,
        "sha256": SHA_A,
        "completeness": 0.995,
        "format": "parquet",
    },
    "mlcp.training.requested.v1": {
        "model": "churn",
        "reason": "data_threshold",
        "dataset": "churn-events",
        "rows_since_last_run": 1200,
        "threshold": 1000,
        "trigger_event_ids": ["5b1c7f3e-0000-4000-8000-000000000001"],
    },
    "mlcp.run.started.v1": {"run_id": "run-7", "model": "churn", "reason": "data_threshold"},
    "mlcp.run.finished.v1": {
        "run_id": "run-7",
        "model": "churn",
        "reason": "data_threshold",
        "params": {"C": 1.0, "max_iter": 200, "seed": 7, "solver": "lbfgs", "warm": False},
        "metrics": {"accuracy": 0.94, "latency_p95_ms": 3.2},
        "baseline": {"version": "1.2.0", "metrics": {"accuracy": 0.93}},
        "datasets": DATASETS,
        "feature_schema": FEATURE_SCHEMA,
        "label": "churned",
        "artifact": ARTIFACT,
        "reference_profile": PROFILE,
        "code_version": "3f2a9c1",
        "entrypoint": "mlcp.examples.sklearn:train_logistic",
        "environment": {
            "python": "3.11.9",
            "packages": {"scikit-learn": "1.5.2", "numpy": "2.1.0"},
            "platform": "Linux-6.8-x86_64",
        },
        "duration_s": 4.2,
    },
    "mlcp.run.failed.v1": {
        "run_id": "run-8",
        "model": "churn",
        "reason": "drift",
        "stage": "train",
        "error": "ValueError: Input contains NaN",
        "error_type": "ValueError",
    },
    "mlcp.model.registered.v1": {
        "model": "churn",
        "version": "1.3.0",
        "run_id": "run-7",
        "previous_version": "1.2.0",
        "bump": "minor",
        "metrics": {"accuracy": 0.94},
        "params": {"C": 1.0},
        "baseline": {"version": "1.2.0", "metrics": {"accuracy": 0.93}},
        "artifact": ARTIFACT,
        "reference_profile": PROFILE,
        "feature_schema": FEATURE_SCHEMA,
        "datasets": DATASETS,
        "code_version": "3f2a9c1",
    },
    "mlcp.gate.check_passed.v1": {
        "model": "churn",
        "version": "1.3.0",
        "stage": "quality",
        "kind": "metrics",
        "evidence": EVIDENCE,
    },
    "mlcp.gate.failed.v1": {
        "model": "churn",
        "version": "1.3.0",
        "stage": "quality",
        "kind": "metrics",
        "reason": "accuracy 0.90 < 0.92",
        "evidence": [
            {
                "metric": "accuracy",
                "observed": 0.9,
                "operator": ">=",
                "threshold": 0.92,
                "satisfied": False,
            }
        ],
    },
    "mlcp.gate.passed.v1": {
        "model": "churn",
        "version": "1.3.0",
        "stages": ["quality", "data", "baseline", "scan", "review", "approve"],
    },
    "mlcp.approval.requested.v1": {
        "model": "churn",
        "version": "1.3.0",
        "stage": "approve",
        "expires_at": "2025-03-04T12:00:00Z",
    },
    "mlcp.approval.granted.v1": {
        "model": "churn",
        "version": "1.3.0",
        "stage": "approve",
        "approver": "alice@example.com",
        "comment": "LGTM",
    },
    "mlcp.approval.rejected.v1": {
        "model": "churn",
        "version": "1.3.0",
        "stage": "approve",
        "approver": "bob@example.com",
        "comment": "recall too low on enterprise plans",
    },
    "mlcp.check.reported.v1": {
        "model": "churn",
        "version": "1.3.0",
        "check": "review",
        "status": "passed",
        "reporter": "github-ci",
        "url": "https://github.example/acme/churn/pull/42",
    },
    "mlcp.model.promoted.v1": {
        "model": "churn",
        "version": "1.3.0",
        "alias": "canary",
        "traffic_percent": 10,
        "previous_version": None,
        "cause": "gate_passed",
    },
    "mlcp.model.rolled_back.v1": {
        "model": "churn",
        "alias": "canary",
        "from_version": "1.3.0",
        "to_version": None,
        "cause": "degraded",
        "reason": "error_rate 0.08 > 0.05",
    },
    "mlcp.prediction.logged.v1": {
        "model": "churn",
        "version": "1.3.0",
        "alias": "canary",
        "request_id": "req-1",
        "features": {"tenure_months": 12, "plan": "pro", "discount": None, "vip": True},
        "prediction": 1,
        "probability": 0.81,
        "latency_ms": 2.5,
        "ts": T0,
    },
    "mlcp.feedback.received.v1": {
        "model": "churn",
        "version": "1.3.0",
        "request_id": "req-1",
        "label": 0,
        "ts": T1,
    },
    "mlcp.drift.detected.v1": {
        "model": "churn",
        "version": "1.2.0",
        "alias": "production",
        "features": [
            {
                "name": "tenure_months",
                "method": "psi",
                "score": 0.31,
                "threshold": 0.2,
                "drifted": True,
            },
            {
                "name": "tenure_months",
                "method": "ks",
                "score": 0.001,
                "threshold": 0.01,
                "drifted": True,
                "statistic": 0.21,
            },
            {"name": "plan", "method": "psi", "score": 0.05, "threshold": 0.2, "drifted": False},
        ],
        "window": WINDOW,
        "share_drifted": 0.5,
        "share_threshold": 0.5,
    },
    "mlcp.model.degraded.v1": {
        "model": "churn",
        "version": "1.3.0",
        "alias": "canary",
        "evidence": [
            {
                "metric": "error_rate",
                "observed": 0.08,
                "operator": ">",
                "threshold": 0.05,
                "satisfied": True,
            }
        ],
        "window": WINDOW,
        "baseline_version": "1.2.0",
    },
    "mlcp.canary.healthy.v1": {
        "model": "churn",
        "version": "1.3.0",
        "alias": "canary",
        "window": WINDOW,
        "evidence": [
            {
                "metric": "error_rate",
                "observed": 0.01,
                "operator": "<=",
                "threshold": 0.05,
                "satisfied": True,
            }
        ],
        "baseline_version": "1.2.0",
    },
    "mlcp.audit.checkpointed.v1": {
        "chain": "registry",
        "seq": 42,
        "hash": SHA_B,
        "key_id": "0123456789abcdef",
        "signed_at": T1,
        "signature": "5e" * 64,
    },
}
