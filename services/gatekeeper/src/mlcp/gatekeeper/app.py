"""Composition root of the gatekeeper service: settings, runtime, handlers, sweep, HTTP."""

from __future__ import annotations

import asyncio

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mlcp.contracts import (
    ApprovalGranted,
    ApprovalRejected,
    ExternalCheckReported,
    ModelVersionRegistered,
)
from mlcp.gatekeeper import scan, store
from mlcp.gatekeeper.handlers import GateMetrics, Handlers, sweep_forever
from mlcp.policy.platform import load_platform_config
from mlcp.runtime import ServiceRuntime, Settings, service_migrations_dir
from mlcp.runtime.settings import load_artifact_limits, load_env_settings

SERVICE = "gatekeeper"
DEFAULT_PORT = 8083


class GatekeeperSettings(BaseSettings):
    """The gatekeeper's own environment knobs (``MLCP_GATEKEEPER_*``)."""

    model_config = SettingsConfigDict(env_prefix="MLCP_GATEKEEPER_", extra="ignore", frozen=True)

    sweep_interval_s: float = Field(5.0, gt=0, le=3600)
    """How often waiting stages are checked against their deadline (timeouts, expiries)."""


def api(runtime: ServiceRuntime) -> Starlette:
    """Read-only HTTP API: one candidate's DAG state, stage evidence and decisions."""

    async def candidate(request: Request) -> JSONResponse:
        model, version = request.path_params["model"], request.path_params["version"]
        async with runtime.pool.acquire() as conn:
            view = await store.candidate_view(conn, model, version)
        if view is None:
            return JSONResponse(
                {"detail": f"no candidate {model} {version} is known to the gatekeeper"}, 404
            )
        return JSONResponse(view)

    return Starlette(routes=[Route("/candidates/{model}/{version}", candidate)])


def build(
    settings: Settings | None = None, *, gatekeeper: GatekeeperSettings | None = None
) -> ServiceRuntime:
    """Wire the gatekeeper: config (the DAGs, validated at start), handlers, sweep, HTTP API."""
    settings = settings or Settings()
    gatekeeper = gatekeeper or load_env_settings(GatekeeperSettings)
    config = load_platform_config(settings.config)
    runtime = ServiceRuntime(
        SERVICE,
        default_port=DEFAULT_PORT,
        migrations_dir=service_migrations_dir(__file__),
        settings=settings,
    )
    handlers = Handlers(
        config,
        settings.artifact_root.expanduser(),
        GateMetrics(runtime.metrics.registry),
        limits=load_artifact_limits(),
    )
    # The sweep runs once at start (deadlines passed while the service was down fail their
    # stages right away), then every sweep_interval_s.
    runtime.background(
        "sweep", lambda: sweep_forever(runtime, handlers, gatekeeper.sweep_interval_s)
    )
    if any(s.kind == "security_scan" for m in config.models.values() for s in m.gates):
        runtime.background("scanner-warm-up", lambda: asyncio.to_thread(scan.warm_up))
    runtime.on(ModelVersionRegistered.TYPE, handlers.on_registered)
    runtime.on(ApprovalGranted.TYPE, handlers.on_approval_granted)
    runtime.on(ApprovalRejected.TYPE, handlers.on_approval_rejected)
    runtime.on(ExternalCheckReported.TYPE, handlers.on_check_reported)
    runtime.mount("/", api(runtime), internal=True)
    return runtime
