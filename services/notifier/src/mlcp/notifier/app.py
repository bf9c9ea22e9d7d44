"""Composition root of the notifier service: settings, runtime, handlers, delivery loop."""

from __future__ import annotations

import logging

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlcp.notifier.adapters import Sender, install_redaction, resolve_targets
from mlcp.notifier.api import api
from mlcp.notifier.delivery import DeliveryLoop, DeliveryMetrics, DeliveryOptions
from mlcp.notifier.domain import ALERT_TYPES, no_usable_channel, route_errors, usable_only
from mlcp.notifier.handlers import alert_handler
from mlcp.policy.platform import load_platform_config
from mlcp.runtime import ServiceRuntime, Settings, service_migrations_dir
from mlcp.runtime.settings import ConfigurationError, load_env_settings

log = logging.getLogger(__name__)

SERVICE = "notifier"
DEFAULT_PORT = 8085
LOGGERS = (
    "mlcp.notifier",
    "mlcp.notifier.delivery",
    "mlcp.notifier.handlers",
    "mlcp.runtime.consumer",
    "httpx",
    "httpcore",
)


class NotifierSettings(BaseSettings):
    """Delivery knobs of the notifier, environment ``MLCP_NOTIFIER_*``."""

    model_config = SettingsConfigDict(env_prefix="MLCP_NOTIFIER_", extra="ignore", frozen=True)

    http_timeout_s: float = Field(10.0, gt=0, le=120)
    max_attempts: int = Field(8, ge=1, le=100)
    retry_initial_s: float = Field(1.0, gt=0, le=600)
    retry_max_s: float = Field(300.0, gt=0, le=3600)
    poll_interval_s: float = Field(1.0, gt=0, le=60)
    digest_max_alerts: int = Field(500, ge=2, le=10_000)


def build(settings: Settings | None = None) -> ServiceRuntime:
    """Wire the notifier: config and secrets checked first, then handlers and the loop."""
    settings = settings or Settings()
    config = load_platform_config(settings.config)
    knobs = load_env_settings(NotifierSettings)
    for error in route_errors(config.notifications):
        raise ConfigurationError(f"MLCP_CONFIG: {error}")
    channels = resolve_targets(config.notifications)
    if (why := no_usable_channel(config.notifications, channels.targets)) is not None:
        raise ConfigurationError(f"MLCP_CONFIG: {why}")
    for name, variable in channels.unset.items():
        log.warning(
            "notification channel %s is disabled: %s is not set (alerts routed to it are "
            "recorded, not sent; set it and restart to enable the channel)",
            name,
            variable,
        )
    notifications = usable_only(config.notifications, channels.targets)
    targets = channels.targets
    install_redaction([s for t in targets.values() for s in t.secrets()], LOGGERS)

    runtime = ServiceRuntime(
        SERVICE,
        default_port=DEFAULT_PORT,
        migrations_dir=service_migrations_dir(__file__),
        settings=settings,
    )
    handler = alert_handler(notifications)
    for event_type in ALERT_TYPES:
        runtime.on(event_type, handler)
    options = DeliveryOptions(
        registry_url=settings.registry_url,
        http_timeout_s=knobs.http_timeout_s,
        max_attempts=knobs.max_attempts,
        retry_initial_s=knobs.retry_initial_s,
        retry_max_s=knobs.retry_max_s,
        poll_interval_s=knobs.poll_interval_s,
        digest_max_alerts=knobs.digest_max_alerts,
    )
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(knobs.http_timeout_s, connect=min(5.0, knobs.http_timeout_s)),
        follow_redirects=False,
    )
    delivery = DeliveryLoop(
        pool=lambda: runtime.pool,
        targets=targets,
        sender=Sender(client),
        options=options,
        metrics=DeliveryMetrics(runtime.metrics.registry),
        schema=runtime.schema,
    )
    # Stopped gracefully before the pool closes: a message in flight is answered and recorded
    # (bounded by the HTTP timeout); cancelling it would leave its deliveries 'uncertain'.
    runtime.background(
        "delivery", delivery.run, stop=delivery.stop, grace_s=knobs.http_timeout_s + 5.0
    )
    runtime.on_shutdown(client.aclose)
    runtime.mount("/", api(lambda: runtime.pool, targets, delivery.disabled, unset=channels.unset))
    return runtime
