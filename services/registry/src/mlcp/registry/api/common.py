"""What every router of the registry's API shares: path and body types, the permission
declaration of an operation, paging, and the existence and If-Match checks.

No ``from __future__ import annotations`` in the API modules: FastAPI evaluates the route
signatures at import.
"""

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints

from mlcp.contracts.types import SLUG_PATTERN, UtcDatetime
from mlcp.policy.platform import PlatformConfig
from mlcp.registry import domain
from mlcp.registry.audit import AuditTrail
from mlcp.registry.auth import AUTHENTICATED, CHALLENGE, PERMISSION_KEY, Caller
from mlcp.registry.cache import ReadCache
from mlcp.registry.ports import Ports
from mlcp.registry.problems import errors
from mlcp.registry.store import versions
from mlcp.runtime import ServiceRuntime

# Path and body types. NUL characters are refused up front: PostgreSQL text cannot hold them.
ModelPath = Annotated[str, Path(pattern=SLUG_PATTERN, max_length=128, examples=["churn"])]
AliasPath = Annotated[str, Path(pattern=SLUG_PATTERN, max_length=128, examples=["production"])]
StagePath = Annotated[str, Path(pattern=SLUG_PATTERN, max_length=128, examples=["approve"])]
CheckPath = Annotated[str, Path(pattern=SLUG_PATTERN, max_length=128, examples=["code-review"])]
VersionPath = Annotated[
    str,
    Path(pattern=r"^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$", examples=["1.0.0"]),
]
VersionStr = Annotated[
    str, StringConstraints(pattern=r"^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$")
]
Comment = Annotated[
    str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\x00]*\S[^\x00]*$")
]
PrincipalStr = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=256,
        pattern=r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$",
    ),
]
UrlStr = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=r"^[!-~]+$")]
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$"
)


def _rfc3339_text(value: Any) -> Any:
    # Pydantic would also take a number (seconds since 1970) or a date without a zone: a query
    # like `until=0.5` must be refused, not read as a moment in 1970.
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time with a time zone: 2026-01-31T12:00:00Z")
    return value


Timestamp = Annotated[UtcDatetime, BeforeValidator(_rfc3339_text)]
"""An instant given as RFC 3339 text with a zone (``Z`` or ``±hh:mm``), normalised to UTC."""
Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="Rows to skip.")]

UNKNOWN_MODEL = {404: "Unknown model."}
UNKNOWN_VERSION = {404: "Unknown model or version."}


class StrictBody(BaseModel):
    """Base of every request body."""

    # Non-finite numbers (NaN, Infinity, 1e309) are refused in every body: 422, never stored.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


@dataclass(frozen=True)
class Context:
    """What the routers reach: the runtime (its pool and transactions, once started), the
    platform config, the stores and audit trail (``ports``), the read cache."""

    runtime: ServiceRuntime
    config: PlatformConfig
    ports: Ports
    cache: ReadCache
    audit_trail: AuditTrail


_bearer = HTTPBearer(auto_error=False, description="An mlcp registry token")


def needs(permission: domain.Permission | None) -> Callable[..., Awaitable[Caller]]:
    """The caller of an operation needing ``permission`` (declared with ``perm``)."""

    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        # AuthenticateFirst has checked the caller before the request got here; this only
        # hands it over (and declares the bearer scheme in the OpenAPI document).
        caller = request.scope.get("state", {}).get("caller")
        if not isinstance(caller, Caller):
            raise HTTPException(401, "missing bearer token", headers=CHALLENGE)
        return caller

    return check


def perm(
    permission: domain.Permission | None,
    described: Mapping[int, str] | None = None,
    links: Mapping[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Route arguments declaring an operation's permission (read by ``AuthenticateFirst``),
    the error statuses it can answer and the OpenAPI links of its answers."""
    successes = {status: {"links": found} for status, found in (links or {}).items()}
    return {
        "openapi_extra": {PERMISSION_KEY: permission or AUTHENTICATED},
        "responses": {**errors(described or {}), **successes},
    }


Reader = Annotated[Caller, Depends(needs("read"))]


def now() -> datetime:
    """The clock of an API call."""
    return datetime.now(UTC)


def page(items: list[dict[str, Any]], limit: int, offset: int) -> dict[str, Any]:
    """One page of a list answer, with the offset of the next one (None: the last)."""
    return {
        "items": items,
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(items) == limit else None,
    }


async def must_have_model(conn: Any, model: str) -> None:
    """404 unless the registry knows ``model``."""
    if not await versions.model_exists(conn, model):
        raise HTTPException(404, f"unknown model {model!r}")


async def must_have_version(conn: Any, model: str, version: str) -> domain.Status:
    """The version's status (locked until the transaction ends); 404 if unknown."""
    await must_have_model(conn, model)
    status = await versions.version_status(conn, model, version)
    if status is None:
        raise HTTPException(404, f"model {model!r} has no version {version!r}")
    return status
