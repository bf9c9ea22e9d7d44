"""The operational HTTP surface of a service: /healthz, /readyz and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlcp.runtime.problem import http_exception_as_problem

ReadinessCheck = Callable[[], Awaitable[bool]]


def health_app(
    service: str,
    registry: CollectorRegistry,
    checks: dict[str, ReadinessCheck],
    *,
    timeout_s: float = 2.0,
    before_scrape: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    """An ASGI app; /readyz is 200 only when every check answers True within ``timeout_s``;
    ``before_scrape`` refreshes gauges that are read on demand (consumer lag) before /metrics."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"service": service, "status": "up"})

    async def run_check(check: ReadinessCheck) -> bool:
        try:
            return await asyncio.wait_for(check(), timeout_s)
        except Exception:
            return False

    async def readyz(_: Request) -> Response:
        results = await asyncio.gather(*(run_check(c) for c in checks.values()))
        status = dict(zip(checks, results, strict=True))
        ready = all(results)
        return JSONResponse(
            {"service": service, "ready": ready, "checks": status},
            status_code=200 if ready else 503,
        )

    async def metrics(_: Request) -> Response:
        if before_scrape is not None:
            with contextlib.suppress(Exception):  # a gauge left stale beats a failed scrape
                await asyncio.wait_for(before_scrape(), timeout_s)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        # A path nothing serves answers like every other error: a problem document.
        exception_handlers={HTTPException: http_exception_as_problem},
    )
