"""Composition root of the monitor service: settings, config, runtime, handlers, HTTP."""

from __future__ import annotations

from mlcp.contracts import (
    FeedbackReceived,
    ModelPromoted,
    ModelRolledBack,
    ModelVersionRegistered,
    PredictionLogged,
)
from mlcp.monitor import domain
from mlcp.monitor.api import status_app
from mlcp.monitor.handlers import Monitor
from mlcp.monitor.metrics import MonitorMetrics
from mlcp.policy.platform import PlatformConfig, load_platform_config
from mlcp.runtime import ServiceRuntime, Settings, service_migrations_dir
from mlcp.runtime.settings import ConfigurationError

SERVICE = "monitor"
DEFAULT_PORT = 8084
BATCH_RECORDS = 5000
"""Records per prediction / feedback batch: each batch costs a fixed overhead (fetch, decode
set-up, one transaction, one commit); 5000 measured 1.7× the throughput of 1000 here."""


def check_config(config: PlatformConfig) -> None:
    """Refuse limits the monitor cannot measure, naming the field."""
    for name, model in config.models.items():
        for key in domain.unknown_limits(model.rollout):
            known = ", ".join(domain.LIMIT_METRICS)
            raise ConfigurationError(
                f"MLCP_CONFIG: models.{name}.rollout.degrade_if.{key}: "
                f"the monitor cannot measure {key!r} (known: {known})"
            )


def build(settings: Settings | None = None) -> ServiceRuntime:
    """Wire the monitor: projections, batch ingestion of predictions and feedback, /models API."""
    settings = settings or Settings()
    config = load_platform_config(settings.config)
    check_config(config)
    runtime = ServiceRuntime(
        SERVICE,
        default_port=DEFAULT_PORT,
        migrations_dir=service_migrations_dir(__file__),
        settings=settings,
    )
    wire(runtime, Monitor(config, MonitorMetrics(runtime.metrics.registry)))
    return runtime


def wire(runtime: ServiceRuntime, monitor: Monitor) -> None:
    """Subscribe ``monitor``'s handlers and mount its API (the benchmark wires its own)."""
    runtime.on(ModelVersionRegistered.TYPE, monitor.on_version_registered)
    runtime.on(ModelPromoted.TYPE, monitor.on_model_promoted)
    runtime.on(ModelRolledBack.TYPE, monitor.on_model_rolled_back)
    runtime.on_batch(PredictionLogged.TYPE, monitor.on_predictions, max_records=BATCH_RECORDS)
    runtime.on_batch(FeedbackReceived.TYPE, monitor.on_feedback, max_records=BATCH_RECORDS)
    runtime.mount("/", status_app(runtime), internal=True)
