"""``mlcp serve MODEL``: a reference HTTP inference server built only on ``mlcp.client``.

``POST /predict`` ``{"features": {...}, "key": "user-1", "request_id": "..."}`` answers
``{"prediction", "probability", "version", "alias", "request_id"}``; ``/healthz`` (process up),
``/readyz`` (a version is loaded), ``/metrics`` (Prometheus). Needs the ``serve`` extra.
Run one worker per process (several processes may share a port behind a load balancer).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlcp.client.client import AsyncModelClient


def create_app(client: AsyncModelClient, *, manage: bool = True) -> Starlette:
    """The server's ASGI app; ``manage`` starts and closes ``client`` with the app."""
    registry = CollectorRegistry()
    requests = Counter(
        "mlcp_serve_requests", "Requests answered", ["version", "alias", "outcome"],
        registry=registry,
    )  # fmt: skip
    latency = Histogram("mlcp_serve_latency_seconds", "Model time per request", registry=registry)
    dropped = Gauge("mlcp_serve_log_dropped", "Prediction rows dropped", registry=registry)
    buffered = Gauge("mlcp_serve_log_buffered", "Prediction rows buffered", registry=registry)
    refused = Gauge("mlcp_serve_artifacts_refused", "Artifacts refused", registry=registry)

    async def predict(request: Request) -> Response:
        try:
            body: Any = await request.json()
            features = body["features"]
            if not isinstance(features, dict):
                raise TypeError("features must be an object")
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"bad request: {exc}"}, status_code=400)
        if not client.ready:
            return JSONResponse({"error": "no version serves yet"}, status_code=503)
        key = body.get("key")
        request_id = body.get("request_id")
        try:
            answer = client.predict(
                features,
                key=None if key is None else str(key),
                request_id=None if request_id is None else str(request_id),
            )
        except (KeyError, ValueError, TypeError) as exc:
            requests.labels("unknown", "unknown", "error").inc()
            return JSONResponse({"error": f"the model refused the input: {exc}"}, 422)
        requests.labels(answer.version, answer.alias, "ok").inc()
        latency.observe(answer.latency_ms / 1000)
        return JSONResponse(
            {
                "prediction": answer.prediction,
                "probability": answer.probability,
                "version": answer.version,
                "alias": answer.alias,
                "request_id": answer.request_id,
            }
        )

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        serving = client.serving
        body = {
            "ready": client.ready,
            "production": serving.version_of("production"),
            "canary": serving.version_of("canary"),
        }
        return JSONResponse(body, status_code=200 if client.ready else 503)

    async def metrics(_: Request) -> Response:
        if client.logger is not None:
            dropped.set(client.logger.stats.dropped)
            buffered.set(client.logger.buffered)
        refused.set(client.follower.stats.refused)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if manage:
            await client.start()
        try:
            yield
        finally:
            if manage:
                await client.close()

    return Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )


def run(model: str, *, host: str = "127.0.0.1", port: int = 8090) -> None:
    """Serve ``model`` until SIGTERM / Ctrl-C (which flushes the prediction log)."""
    import uvicorn

    uvicorn.run(create_app(AsyncModelClient(model)), host=host, port=port, workers=1)
