"""RFC 9457 problem details: the shape of every error answer of mlcp's HTTP servers."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"


def problem_response(
    status: int,
    detail: str,
    *,
    instance: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An ``application/problem+json`` answer: ``type`` (``about:blank``: the status says it
    all), ``title`` (the status phrase), ``status``, ``detail``, ``instance`` (the request path)
    and, for invalid input, ``errors``."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = list(errors)
    encoded = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(encoded.encode(), status, headers=dict(headers or {}), media_type=PROBLEM_JSON)


async def http_exception_as_problem(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: an ``HTTPException`` (404, 405 …) as a problem document."""
    assert isinstance(exc, HTTPException)
    return problem_response(
        exc.status_code, str(exc.detail), instance=request.url.path, headers=exc.headers
    )
