"""A SERVER span for every HTTP request a service answers (OpenTelemetry HTTP conventions).

The span continues the caller's ``traceparent`` and is named after the route template
(``GET /models/{model}/versions``), never the raw path, so that a trace backend groups requests
by route instead of by model and version. OpenTelemetry's own ASGI middleware names spans by the
raw path, adds two internal spans per request and writes the older attribute names unless told
otherwise; Starlette's (experimental) one finds the route only for FastAPI; FastAPI's native
telemetry covers only the registry. Hence this small layer on the SDK's API, in front of every
service's routes — FastAPI is told to leave the span to it.

Not traced: the probes and the scrape (``/healthz``, ``/readyz``, ``/metrics``), polled every few
seconds by orchestrators and Prometheus, and whatever a front layer answers before the routes
(the registry's alias fast lane, docs/registry.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str | None:
    """The template of the route that will answer ``scope`` (through mounts), as the router
    picks it: the first full match, else the first partial one (a wrong method)."""
    partial: tuple[BaseRoute, Scope] | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return _template(route, {**scope, **child})
        if match is Match.PARTIAL and partial is None:
            partial = (route, child)
    return _template(partial[0], {**scope, **partial[1]}) if partial else None


def _template(route: BaseRoute, scope: Scope) -> str | None:
    path: str | None = getattr(route, "path", None)
    if isinstance(route, Mount):
        inner = getattr(route.app, "routes", None)
        below = route_template(inner, scope) if inner else None
        return f"{route.path}{below}" if below is not None else None
    return path


class ServerSpans:
    """ASGI middleware: one SERVER span per request, ERROR on a 5xx or an exception."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute],
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.app = app
        self._routes = routes
        self._tracer = trace.get_tracer("mlcp.runtime.http", tracer_provider=tracer_provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # FastAPI (the registry's API) makes a SERVER span of its own unless an outer layer
        # says it has one: its "fastapi.telemetry" scope key, None meaning "not yours".
        scope["fastapi.telemetry"] = None
        if scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _KNOWN_METHODS else "_OTHER"
        route = route_template(self._routes, scope)
        name = f"{method if method != '_OTHER' else 'HTTP'} {route}" if route else method
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        if route:
            attributes["http.route"] = route
        if server := scope.get("server"):
            attributes["server.address"], attributes["server.port"] = server[0], server[1]
        if client := scope.get("client"):
            attributes["client.address"] = client[0]
        if agent := headers.get("user-agent"):
            attributes["user_agent.original"] = agent
        with self._tracer.start_as_current_span(
            name,
            context=propagate.extract(headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
        ) as span:

            async def send_noting_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_attribute("error.type", str(status))
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, send_noting_status)
