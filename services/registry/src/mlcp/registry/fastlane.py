"""The fast lane of alias polling: an ASGI layer in front of all the registry serves.

Inference services poll ``GET /models/{model}/aliases/{alias}`` many times a second. When both
the caller's token and the alias are in the read cache (``cache.py``), this layer answers from
memory — the same status, headers and bytes the FastAPI route would send — and skips the
runtime's Starlette middleware and routing and FastAPI's routing, validation, dependency
injection and per-request span, which cost several times the lookup itself. Everything else
goes on untouched (``runtime.front``): other routes, a cache miss (which the route answers
from the database and caches), a missing, unknown or revoked token (401), a caller without the
``read`` permission (403), a bad name (422).

A cached alias exists only under a model and alias name the route validated, so a hit never
lets an invalid name through; the cache's invalidation rules keep the answer as fresh as the
route's.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from mlcp.registry import domain
from mlcp.registry.auth import Authenticator
from mlcp.registry.cache import ReadCache, model_scope

_ALIAS_PATH = re.compile(r"/models/([^/]+)/aliases/([^/]+)")


class AliasFastLane:
    """Answers cached alias lookups of permitted callers; hands the rest to ``app``."""

    def __init__(self, app: ASGIApp, auth: Authenticator, cache: ReadCache) -> None:
        self.app = app
        self.cache = cache
        self._auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            answer = self._answer(scope)
            if answer is not None:
                status, headers, body = answer
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root + "/"):
            path = path[len(root) :]
        match = _ALIAS_PATH.fullmatch(path)
        if match is None:
            return None
        cached: tuple[str, bytes] | None = self.cache.get(model_scope(match[1]), match[2])
        if cached is None:
            return None
        authorization = if_none_match = b""
        for name, value in scope["headers"]:
            if name == b"authorization" and not authorization:
                authorization = value
            elif name == b"if-none-match" and not if_none_match:
                if_none_match = value
        scheme, _, credentials = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not credentials:
            return None
        caller = self._auth.cached_caller(credentials)
        if caller is None or not domain.allowed(caller.roles, "read"):
            return None
        etag, body = cached
        headers = [(b"etag", etag.encode()), (b"cache-control", b"no-cache")]
        if etag in if_none_match.decode("latin-1"):
            return 304, headers, b""
        headers += [(b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json")]  # fmt: skip
        return 200, headers, body
