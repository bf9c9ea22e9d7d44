"""Composition root of the monitor service: settings, runtime, handlers, HTTP."""

from __future__ import annotations

from mlcp.runtime import ServiceRuntime, Settings, service_migrations_dir

SERVICE = "monitor"
DEFAULT_PORT = 8084


def build(settings: Settings | None = None) -> ServiceRuntime:
    """Wire the monitor service (its handlers arrive with its own issue)."""
    return ServiceRuntime(
        SERVICE,
        default_port=DEFAULT_PORT,
        migrations_dir=service_migrations_dir(__file__),
        settings=settings,
    )
