"""Prometheus metrics of the monitor, per model and version, on the runtime's registry.

The latency histogram is fed a whole batch at a time (numpy bucket counts) through a custom
collector: prometheus_client's Histogram only observes one value per call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0)


class LatencyHistogram(Collector):
    """``mlcp_monitor_prediction_latency_ms`` {model, version}, observed per batch."""

    name = "mlcp_monitor_prediction_latency_ms"

    def __init__(self) -> None:
        self._edges = np.asarray(LATENCY_BUCKETS_MS)
        self._series: dict[tuple[str, str], tuple[npt.NDArray[np.int64], float]] = {}
        self._lock = threading.Lock()

    def observe_many(self, model: str, version: str, values: npt.NDArray[np.float64]) -> None:
        """Add a batch of latencies (ms)."""
        index = np.searchsorted(self._edges, values, side="left")  # le semantics
        counts = np.bincount(index, minlength=self._edges.size + 1).astype(np.int64)
        with self._lock:
            previous, total = self._series.get(
                (model, version), (np.zeros(self._edges.size + 1, np.int64), 0.0)
            )
            self._series[(model, version)] = (previous + counts, total + float(values.sum()))

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            self.name, "Latency of logged predictions (ms).", labels=["model", "version"]
        )
        with self._lock:
            series = dict(self._series)
        for (model, version), (counts, total) in sorted(series.items()):
            cumulative = np.cumsum(counts)
            buckets = [
                (f"{e:g}", float(c)) for e, c in zip(LATENCY_BUCKETS_MS, cumulative, strict=False)
            ]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric([model, version], buckets, total)
        yield family


class MonitorMetrics:
    """Domain metrics named ``mlcp_monitor_<what>_<unit>``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.predictions = Counter(
            "mlcp_monitor_predictions_total",
            "Predictions ingested, by model, version and outcome (ok, error).",
            ["model", "version", "outcome"],
            registry=registry,
        )
        self.latency = LatencyHistogram()
        registry.register(self.latency)
        self.drift_score = Gauge(
            "mlcp_monitor_drift_score",
            "Latest drift score per feature and method (PSI, or the KS / chi2 p-value).",
            ["model", "version", "feature", "method"],
            registry=registry,
        )
        self.share_drifted = Gauge(
            "mlcp_monitor_drift_share_ratio",
            "Share of drifted features in the latest window.",
            ["model", "version"],
            registry=registry,
        )
        self.decisions = Counter(
            "mlcp_monitor_decisions_total",
            "Decisions taken, by kind (drift, canary, production) and outcome.",
            ["model", "version", "kind", "outcome"],
            registry=registry,
        )
        self.issues = Counter(
            "mlcp_monitor_ingest_issues_total",
            "Bad input counted instead of failing: unknown_version, missing_features, bad_value.",
            ["model", "version", "reason"],
            registry=registry,
        )
        self.missing = Counter(
            "mlcp_monitor_missing_values_total",
            "Missing values of profiled features in predictions.",
            ["model", "version", "feature"],
            registry=registry,
        )
        self.feedback = Counter(
            "mlcp_monitor_feedback_total",
            "Labels received, by model.",
            ["model"],
            registry=registry,
        )
