"""Prometheus metrics of the shared runtime, one registry per service process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RuntimeMetrics:
    """Counters every service exposes, named ``mlcp_<service>_<what>_<unit>``."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        prefix = f"mlcp_{service}"
        self.events_handled = Counter(
            f"{prefix}_events_handled_total",
            "Events taken from Kafka, by topic and outcome (applied, duplicate, dead_lettered).",
            ["topic", "outcome"],
            registry=self.registry,
        )
        self.handler_retries = Counter(
            f"{prefix}_handler_retries_total",
            "Handler attempts that failed and were retried, by topic.",
            ["topic"],
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            f"{prefix}_handler_duration_seconds",
            "Time from taking a record to committing its transaction, by topic.",
            ["topic"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.dead_lettered = Counter(
            f"{prefix}_dead_lettered_total",
            "Records sent to a dead-letter topic, by source topic and reason.",
            ["topic", "reason"],
            registry=self.registry,
        )
        self.outbox_published = Counter(
            f"{prefix}_outbox_published_total",
            "Outbox rows published to Kafka.",
            registry=self.registry,
        )
        self.events_published = Counter(
            f"{prefix}_events_published_total",
            "Events this service published (outbox relay), by CloudEvents type: the lifecycle's "
            "steps (runs, registrations, gate results, promotions, rollbacks, drift).",
            ["type"],
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            f"{prefix}_consumer_lag_records",
            "Records on an assigned partition beyond this consumer's fetch position (updated at "
            "each scrape): how far the service is behind its topics.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.retention_deleted = Counter(
            f"{prefix}_retention_deleted_rows_total",
            "Inbox and published outbox rows deleted past their retention, by table.",
            ["table"],
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            f"{prefix}_outbox_pending_rows",
            "Outbox rows committed but not yet published (at the relay's last pass).",
            registry=self.registry,
        )
