"""Composition root of the trainer service: settings, runtime, handlers, training workers."""

from __future__ import annotations

from mlcp.contracts import (
    DataArrived,
    DriftDetected,
    ModelPromoted,
    ModelRolledBack,
    ModelVersionRegistered,
    TrainingRequested,
)
from mlcp.policy.platform import PlatformConfig, load_platform_config
from mlcp.runtime import ServiceRuntime, Settings, service_migrations_dir
from mlcp.runtime.settings import load_artifact_limits, load_env_settings
from mlcp.trainer.handlers import TrainerHandlers
from mlcp.trainer.worker import Worker, WorkerSettings

SERVICE = "trainer"
DEFAULT_PORT = 8082


class TrainerRuntime(ServiceRuntime):
    """The shared runtime plus the training workers (background tasks) and the manual trigger."""

    def __init__(
        self,
        settings: Settings,
        config: PlatformConfig,
        worker_settings: WorkerSettings,
    ) -> None:
        super().__init__(
            SERVICE,
            default_port=DEFAULT_PORT,
            migrations_dir=service_migrations_dir(__file__),
            settings=settings,
        )
        self.config = config
        self.worker_settings = worker_settings
        self.handlers = TrainerHandlers(config, registry=self.metrics.registry)
        limits = load_artifact_limits()
        for i in range(worker_settings.workers):
            # Cancelled at stop: a worker kills its training child and hands the run back.
            self.background(f"worker-{i}", Worker(self, config, worker_settings, limits).run)

    async def request_training(self, model: str, *, requested_by: str) -> str:
        """Manual trigger (for the CLI): emit TrainingRequested(reason=manual); its event id."""
        async with self.transaction() as tx:
            return await self.handlers.request_manual(tx, model, requested_by=requested_by)


def build(
    settings: Settings | None = None, worker_settings: WorkerSettings | None = None
) -> TrainerRuntime:
    """Wire the trainer: ledger and triggers, the run queue, the production projection."""
    settings = settings or Settings()
    config = load_platform_config(settings.config)
    worker_settings = worker_settings or load_env_settings(WorkerSettings)
    runtime = TrainerRuntime(settings, config, worker_settings)
    h = runtime.handlers
    # Pipelines can send DataArrived in bursts: one transaction per Kafka batch keeps up. Under
    # a steady stream the broker holds a fetch up to 25 ms (or 32 KiB, ~80 events) so that a
    # batch is more than one or two events.
    runtime.on_batch(DataArrived.TYPE, h.on_data_arrived, linger_bytes=32_768, linger_ms=25)
    runtime.on(DriftDetected.TYPE, h.on_drift_detected)
    # The trainer's own requests come back at up to one per crossing (100/s while 1,000
    # DataArrived/s flow): one transaction per Kafka batch rather than one per request.
    runtime.on_batch(TrainingRequested.TYPE, h.on_training_requested)
    runtime.on(ModelVersionRegistered.TYPE, h.on_model_registered)
    runtime.on(ModelPromoted.TYPE, h.on_model_promoted)
    runtime.on(ModelRolledBack.TYPE, h.on_model_rolled_back)
    return runtime
