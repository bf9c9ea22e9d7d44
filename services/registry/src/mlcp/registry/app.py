"""Composition root of the registry service: settings, runtime, handlers, HTTP."""

from __future__ import annotations

from mlcp.runtime import ServiceRuntime, Settings, service_migrations_dir

SERVICE = "registry"
DEFAULT_PORT = 8081


def build(settings: Settings | None = None) -> ServiceRuntime:
    """Wire the registry service (its handlers arrive with its own issue)."""
    return ServiceRuntime(
        SERVICE,
        default_port=DEFAULT_PORT,
        migrations_dir=service_migrations_dir(__file__),
        settings=settings,
    )
