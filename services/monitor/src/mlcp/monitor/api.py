"""Read-only HTTP API of the monitor: what it knows and decided about a model."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mlcp.monitor.stores.status import model_status as read_status
from mlcp.runtime import ServiceRuntime


def status_app(runtime: ServiceRuntime) -> Starlette:
    """``GET /models/{model}``: versions, aliases, watches, recent decisions, ingest issues."""

    async def model_status(request: Request) -> JSONResponse:
        model = request.path_params["model"]
        async with runtime.pool.acquire() as conn:
            status = await read_status(conn, model)
        if not any(status[k] for k in ("versions", "aliases", "issues")):
            return JSONResponse({"detail": f"the monitor knows nothing of model {model!r}"}, 404)
        return JSONResponse(status)

    return Starlette(routes=[Route("/models/{model}", model_status)])
