"""Composition root of the notifier service: settings, runtime, handlers, HTTP."""

from __future__ import annotations

from mlcp.runtime import ServiceRuntime, Settings, service_migrations_dir

SERVICE = "notifier"
DEFAULT_PORT = 8085


def build(settings: Settings | None = None) -> ServiceRuntime:
    """Wire the notifier service (its handlers arrive with its own issue)."""
    return ServiceRuntime(
        SERVICE,
        default_port=DEFAULT_PORT,
        migrations_dir=service_migrations_dir(__file__),
        settings=settings,
    )
