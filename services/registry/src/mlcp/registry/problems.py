"""Errors of the registry's API as RFC 9457 problem details, and their OpenAPI documentation.

Every error answer — 401, 403, 404, 409, 412, 422, 503, and the 404/405 of unknown routes — is
``application/problem+json``: ``type`` (``about:blank``: the status says it all), ``title`` (the
status phrase), ``status``, ``detail`` (one readable line, the message clients showed before)
and ``instance`` (the request path); a 422 adds ``errors``, one ``{loc, msg, type}`` per invalid
field. The input that failed is never echoed: it may be large, and a non-finite number in it
(``1e309``) cannot be written as JSON at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from mlcp.registry import domain
from mlcp.runtime.db import TRANSIENT_DB_ERRORS
from mlcp.runtime.problem import PROBLEM_JSON, http_exception_as_problem, problem_response

RETRY_AFTER_S = 2
_REF = "#/components/schemas/Problem"


class ValidationIssue(BaseModel):
    """One invalid part of a request."""

    loc: list[str | int] = Field(description="Where: body, query, path or header, then the field.")
    msg: str
    type: str = Field(description="Machine-readable kind, e.g. 'finite_number', 'missing'.")


class Problem(BaseModel):
    """An RFC 9457 problem document: the body of every error answer of the API."""

    type: str = Field("about:blank", description="Problem type URI ('about:blank': see status).")
    title: str = Field(description="The HTTP status phrase.")
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="What went wrong, in one line.")
    instance: str | None = Field(None, description="The request path.")
    errors: list[ValidationIssue] | None = Field(
        None, description="422 only: each invalid field of the request."
    )


problem = problem_response


def unavailable(instance: str | None, exc: BaseException) -> Response:
    """503 with Retry-After: PostgreSQL is unreachable (restarting, failing over)."""
    return problem(
        503,
        f"the registry's database is unavailable ({type(exc).__name__}); retry",
        instance=instance,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def validation_issues(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI errors as ``ValidationIssue`` dicts, without the failing input."""
    return [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in errors
    ]


def describe(issues: Sequence[Mapping[str, Any]]) -> str:
    """One line from the issues: ``field: message; …`` (the body prefix left out)."""
    parts = []
    for issue in issues:
        loc = [str(p) for p in issue["loc"]]
        where = ".".join(loc[1:] if loc[:1] == ["body"] else loc)
        parts.append(f"{where}: {issue['msg']}" if where else issue["msg"])
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem document."""

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot even decode (not UTF-8): invalid input
            # like any other, so one status (422) means "fix your request".
            issue = {"loc": ["body"], "msg": str(exc.detail), "type": "body_undecodable"}
            return problem(422, describe([issue]), instance=request.url.path, errors=[issue])
        return await http_exception_as_problem(request, exc)

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        issues = validation_issues(exc.errors())
        return problem(422, describe(issues), instance=request.url.path, errors=issues)

    async def conflict(request: Request, exc: Exception) -> Response:
        return problem(409, str(exc), instance=request.url.path)

    async def database_away(request: Request, exc: Exception) -> Response:
        return unavailable(request.url.path, exc)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(domain.Conflict, conflict)
    for error in TRANSIENT_DB_ERRORS:
        if issubclass(error, Exception):
            app.add_exception_handler(error, database_away)


# --- OpenAPI ------------------------------------------------------------------------------------

_DEFAULT_DESCRIPTIONS = {
    401: "No token, or a malformed, unknown or revoked one.",
    403: "The token's live grants lack the operation's permission.",
    404: "Not found.",
    409: "The request contradicts the current state.",
    412: "If-Match did not match the alias' current ETag.",
    422: "Invalid input: a parameter or body field (named in `errors`).",
    503: "The registry's database is unavailable; retry after Retry-After seconds.",
}
_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="mlcp"'}},
    503: {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait."}},
}


def errors(described: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: its own error statuses, each with what it means there."""
    return {status: {"description": text} for status, text in described.items()}


def document(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document declare every error each operation can answer.

    Every operation: 401 and 503 (authentication reads the database); 403 unless any token
    will do; 422 when it takes parameters or a body; plus the statuses the route declares with
    ``responses=errors(...)``. All with the one ``Problem`` schema; FastAPI's own 422 schema
    goes.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(problem_schema.pop("$defs", {}))
        components["Problem"] = problem_schema
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                _declare_errors(operation)
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _declare_errors(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)  # FastAPI's HTTPValidationError; re-added below as a Problem
    statuses = {401, 503}
    if operation.get("x-required-permission") != "authenticated":
        statuses.add(403)
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.add(422)
    statuses |= {int(code) for code in responses if code.isdigit() and int(code) >= 400}
    for status in sorted(statuses):
        declared = responses.get(str(status), {})
        responses[str(status)] = {
            "description": declared.get("description") or _DEFAULT_DESCRIPTIONS[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": _REF}}},
            **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
        }
