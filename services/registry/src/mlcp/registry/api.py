"""The registry's HTTP API (FastAPI), mounted on the runtime's HTTP server.

Handlers stay thin: authenticate and check the permission, validate, call the store and the
domain, emit through the outbox. Every route declares its permission in the OpenAPI document
(``x-required-permission``), which the RBAC matrix test reads. No ``from __future__ import
annotations`` here: FastAPI must evaluate the route signatures, whose dependency aliases are
local to ``create_api``.
"""

import dataclasses
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Self

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from mlcp.contracts import ApprovalGranted, ApprovalRejected, ExternalCheckReported
from mlcp.contracts.types import SLUG_PATTERN, UtcDatetime
from mlcp.policy.platform import GateStage, PlatformConfig
from mlcp.registry import chain, domain, problems, store
from mlcp.registry.audit import AuditTrail, read_checkpoints, verify_chain
from mlcp.registry.auth import (
    AUTHENTICATED,
    CHALLENGE,
    PERMISSION_KEY,
    AuthenticateFirst,
    Authenticator,
    Caller,
    new_token,
)
from mlcp.registry.cache import ReadCache, model_scope, token_scope
from mlcp.registry.handlers import apply
from mlcp.registry.problems import errors
from mlcp.runtime import ServiceRuntime
from mlcp.runtime.telemetry import resume_trace

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
Role = Literal["viewer", "operator", "approver", "admin", "auditor"]
MAX_TTL_S = 10 * 365 * 86400


class _Body(BaseModel):
    # Non-finite numbers (NaN, Infinity, 1e309) are refused in every body: 422, never stored.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PromoteRequest(_Body):
    """Point an alias at a version."""

    version: VersionStr
    traffic_percent: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    """canary: its share of traffic (default 10); ignored for production (100)."""
    reason: Comment | None = None


class RollbackRequest(_Body):
    """Move an alias back (canary: removed; production: to its rollback target)."""

    reason: Comment | None = None


class DecisionRequest(_Body):
    """An approver's decision on a manual stage."""

    comment: Comment | None = None


class CheckReport(_Body):
    """The result of an external check (CI, code review)."""

    status: Literal["passed", "failed"]
    url: UrlStr | None = None
    details: Comment | None = None


class GrantRequest(_Body):
    """A role for a token, optionally expiring (``expires_at`` or ``ttl_seconds``)."""

    # Published in the schema too, so clients (and fuzzers) know the rule before sending.
    model_config = ConfigDict(
        json_schema_extra={"not": {"required": ["expires_at", "ttl_seconds"]}}
    )

    role: Role
    expires_at: Timestamp | None = None
    ttl_seconds: int | None = Field(None, ge=1, le=MAX_TTL_S)

    @model_validator(mode="after")
    def _one_expiry(self) -> Self:
        if self.expires_at is not None and self.ttl_seconds is not None:
            raise ValueError("give expires_at or ttl_seconds, not both")
        return self

    def expiry(self, now: datetime) -> datetime | None:
        """When the grant ends (None: never)."""
        if self.ttl_seconds is not None:
            return now + timedelta(seconds=self.ttl_seconds)
        return self.expires_at


class CheckpointSummary(BaseModel):
    """The signed checkpoint a verification compared the table with."""

    seq: int
    hash: str
    key_id: str
    signed_at: datetime


class AuditVerdict(BaseModel):
    """The outcome of ``GET /audit/verify``."""

    ok: bool
    rows_checked: int = Field(description="Rows found intact before the first problem.")
    first_bad_seq: int | None
    problem: chain.Problem | None = Field(description="What happened at first_bad_seq.")
    reason: str | None
    checkpoint: CheckpointSummary | None = Field(description="The newest signed checkpoint read.")
    unanchored_rows: int = Field(
        description="Rows after that checkpoint (their own is on its way)."
    )
    warning: str | None = Field(description="What this verification could not check.")


class TokenRequest(_Body):
    """A new API token for a person or a system, with its first grants."""

    principal: PrincipalStr
    description: Comment | None = None
    grants: list[GrantRequest] = Field(default_factory=list, max_length=10)


def _now() -> datetime:
    return datetime.now(UTC)


def _page(items: list[dict[str, Any]], limit: int, offset: int) -> dict[str, Any]:
    return {
        "items": items,
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(items) == limit else None,
    }


def _stage(config: PlatformConfig, model: str, name: str, kind: str) -> GateStage:
    configured = config.models.get(model)
    for stage in configured.gates if configured else []:
        if stage.kind == kind and name in (stage.name, stage.check or stage.name):
            return stage
    raise HTTPException(404, f"model {model!r} has no {kind} stage {name!r} in MLCP_CONFIG")


def _alias_answer(model: str, alias: str, found: dict[str, Any]) -> tuple[str, bytes]:
    """The ETag and JSON body of an alias resolution, encoded once and then served from cache."""
    body = {
        "model": model,
        "alias": alias,
        "version": found["version"],
        "status": found["status"],
        "traffic_percent": found["traffic_percent"],
        "artifact": {
            "uri": found["artifact_uri"],
            "sha256": found["artifact_sha256"],
            "format": found["artifact_format"],
        },
        "updated_at": found["updated_at"],
    }
    encoded = json.dumps(
        jsonable_encoder(body), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )
    return f'"{found["revision"]}"', encoded.encode()


def create_api(
    runtime: ServiceRuntime,
    auth: Authenticator,
    config: PlatformConfig,
    cache: ReadCache,
    audit_trail: AuditTrail,
) -> FastAPI:
    """The API app; it reaches the database through ``runtime`` once the runtime has started."""
    api = FastAPI(
        title="mlcp registry",
        version="1.0.0",
        description="Models, versions, aliases, approvals and the audit log of mlcp. "
        "Every call needs `Authorization: Bearer <token>`; each operation names its "
        "permission in `x-required-permission`. Errors are RFC 9457 problem documents "
        "(`application/problem+json`).",
    )
    bearer = HTTPBearer(auto_error=False, description="An mlcp registry token")

    def pool() -> Any:
        return runtime.pool

    problems.install(api)
    problems.document(api)
    api.add_middleware(AuthenticateFirst, routes=lambda: api.router.routes, auth=auth, pool=pool)

    def needs(permission: domain.Permission | None) -> Callable[..., Awaitable[Caller]]:
        async def check(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
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
        successes = {status: {"links": found} for status, found in (links or {}).items()}
        return {
            "openapi_extra": {PERMISSION_KEY: permission or AUTHENTICATED},
            "responses": {**errors(described or {}), **successes},
        }

    unknown_model = {404: "Unknown model."}
    unknown_version = {404: "Unknown model or version."}
    Reader = Annotated[Caller, Depends(needs("read"))]

    async def must_have_model(conn: Any, model: str) -> None:
        if not await store.model_exists(conn, model):
            raise HTTPException(404, f"unknown model {model!r}")

    async def must_have_version(conn: Any, model: str, version: str) -> domain.Status:
        await must_have_model(conn, model)
        status = await store.version_status(conn, model, version)
        if status is None:
            raise HTTPException(404, f"model {model!r} has no version {version!r}")
        return status

    async def check_if_match(conn: Any, model: str, alias: str, if_match: str | None) -> None:
        # Optimistic concurrency: act only if the alias is still where the caller saw it.
        if if_match is None:
            return
        revision = await store.alias_revision(conn, model, alias)
        current = None if revision is None else f'"{revision}"'
        wanted = [tag.strip().removeprefix("W/") for tag in if_match.split(",")]
        if "*" in wanted and current is not None:
            return
        if current not in wanted:
            raise HTTPException(
                412, f"alias {alias!r} is at ETag {current or 'none'}, not {if_match.strip()}"
            )

    # --- reading -------------------------------------------------------------------------------

    @api.get("/whoami", **perm(None))
    async def whoami(caller: Annotated[Caller, Depends(needs(None))]) -> dict[str, Any]:
        """Who the token belongs to and its live roles."""
        return {"principal": caller.principal, "roles": list(caller.roles)}

    @api.get("/models", **perm("read"))
    async def list_models(
        _: Reader,
        limit: Limit = 50,
        offset: Offset = 0,
        prefix: Annotated[str | None, Query(pattern=r"^[a-z0-9._-]{1,128}$")] = None,
    ) -> dict[str, Any]:
        """Models by name, with latest, production and canary versions."""
        async with runtime.pool.acquire() as conn:
            items = await store.list_models(conn, prefix=prefix, limit=limit, offset=offset)
        return _page(items, limit, offset)

    @api.get("/models/{model}", **perm("read", unknown_model))
    async def get_model(_: Reader, model: ModelPath) -> dict[str, Any]:
        """A model: its aliases and rollout state."""
        async with runtime.pool.acquire() as conn:
            await must_have_model(conn, model)
            rollout = await store.get_rollout(conn, model)
            aliases = await store.get_aliases(conn, model)
            latest = await store.latest_version(conn, model)
        return {
            "name": model,
            "latest_version": latest["version"] if latest else None,
            "aliases": aliases,
            "rollout": dataclasses.asdict(rollout),
        }

    @api.get("/models/{model}/versions", **perm("read", unknown_model))
    async def list_versions(
        _: Reader,
        model: ModelPath,
        status: domain.Status | None = None,
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """Versions of a model, newest first, optionally filtered by status."""
        async with runtime.pool.acquire() as conn:
            await must_have_model(conn, model)
            items = await store.list_versions(
                conn, model, status=status, limit=limit, offset=offset
            )
        return _page(items, limit, offset)

    @api.get("/models/{model}/versions/{version}", **perm("read", unknown_version))
    async def get_version(_: Reader, model: ModelPath, version: VersionPath) -> dict[str, Any]:
        """A version with its full standard metadata."""
        async with runtime.pool.acquire() as conn:
            await must_have_model(conn, model)
            found = await store.get_version(conn, model, version)
        if found is None:
            raise HTTPException(404, f"model {model!r} has no version {version!r}")
        for part in ("major", "minor", "patch"):
            found.pop(part, None)
        return found

    @api.get("/models/{model}/versions/{version}/lineage", **perm("read", unknown_version))
    async def lineage(_: Reader, model: ModelPath, version: VersionPath) -> dict[str, Any]:
        """Version → training run → data: every batch with its uri, rows and sha256, and the
        dataset digest (their fingerprint, recipe in the RunFinished schema) → artifact."""
        async with runtime.pool.acquire() as conn:
            await must_have_model(conn, model)
            v = await store.get_version(conn, model, version)
        if v is None:
            raise HTTPException(404, f"model {model!r} has no version {version!r}")
        return {
            "model": model,
            "version": version,
            "previous_version": v["previous_version"],
            "bump": v["bump"],
            "run": {
                "run_id": v["run_id"],
                "reason": v["training_reason"],
                "code_version": v["code_version"],
                "entrypoint": v["entrypoint"],
                "params": v["params"],
                "metrics": v["metrics"],
                "environment": v["environment"],
                "duration_s": v["duration_s"],
                "reported_by": v["owner"],
                "event_id": v["cause_event_id"],
            },
            "datasets": domain.lineage_datasets(v["datasets"]),
            "artifact": {
                "uri": v["artifact_uri"],
                "sha256": v["artifact_sha256"],
                "format": v["artifact_format"],
                "size_bytes": v["artifact_size"],
            },
        }

    @api.get("/models/{model}/aliases", **perm("read", unknown_model))
    async def list_aliases(_: Reader, model: ModelPath) -> dict[str, str]:
        """alias → version, for every alias the model has now."""
        async with runtime.pool.acquire() as conn:
            await must_have_model(conn, model)
            return await store.get_aliases(conn, model)

    @api.get(
        "/models/{model}/aliases/{alias}",
        **perm("read", {404: "Unknown model, or the model has no such alias."}),
    )
    async def resolve_alias(
        _: Reader, request: Request, model: ModelPath, alias: AliasPath
    ) -> Response:
        """The version behind an alias with its artifact; ETag / If-None-Match → 304."""
        # The hot path of polling inference services: answered from the read cache, which
        # every alias move and status change drops (cache.py); the database on a miss.
        scope = model_scope(model)
        answer: tuple[str, bytes] | None = cache.get(scope, alias)
        if answer is None:

            async def load() -> tuple[str, bytes] | None:
                async with runtime.pool.acquire() as conn:
                    found = await store.resolve_alias(conn, model, alias)
                return None if found is None else _alias_answer(model, alias, found)

            answer = await cache.fill(scope, alias, load)
            if answer is None:
                async with runtime.pool.acquire() as conn:
                    await must_have_model(conn, model)
                raise HTTPException(404, f"model {model!r} has no alias {alias!r}")
        etag, body = answer
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    @api.get("/models/{model}/aliases/{alias}/history", **perm("read", unknown_model))
    async def alias_history(
        _: Reader, model: ModelPath, alias: AliasPath, limit: Limit = 50, offset: Offset = 0
    ) -> dict[str, Any]:
        """Every change of an alias, newest first: who, when, why, the cause event."""
        async with runtime.pool.acquire() as conn:
            await must_have_model(conn, model)
            items = await store.alias_history(conn, model, alias, limit=limit, offset=offset)
        return _page(items, limit, offset)

    @api.get("/models/{model}/aliases/{alias}/at", **perm("read", unknown_model))
    async def alias_at(
        _: Reader, model: ModelPath, alias: AliasPath, time: Annotated[Timestamp, Query()]
    ) -> dict[str, Any]:
        """Which version the alias pointed to at ``time`` (null: none)."""
        async with runtime.pool.acquire() as conn:
            await must_have_model(conn, model)
            change = await store.alias_at(conn, model, alias, time)
        return {
            "model": model,
            "alias": alias,
            "time": time,
            "version": change["version"] if change else None,
            "since": change["at"] if change else None,
            "change": change,
        }

    # --- governance actions ---------------------------------------------------------------------

    @api.post(
        "/models/{model}/aliases/{alias}",
        **perm(
            "promote",
            {
                404: "Unknown model or version.",
                409: "The promotion contradicts the state (rejected version, alias already "
                "on it, …).",
                412: "If-Match did not match the alias' current ETag: it moved since.",
            },
        ),
    )
    async def promote(
        caller: Annotated[Caller, Depends(needs("promote"))],
        model: ModelPath,
        alias: AliasPath,
        body: Annotated[PromoteRequest, Body()],
        if_match: Annotated[
            str | None,
            Header(
                alias="If-Match",
                max_length=256,
                description="ETag of the alias as last read; 412 if it moved since.",
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Point an alias at a version by hand (→ ModelPromoted); 409 when it conflicts."""
        now = _now()
        async with runtime.transaction() as tx:
            # Model row first, then the version: the handlers' lock order (no deadlock).
            if not await store.lock_existing_model(tx.conn, model):
                raise HTTPException(404, f"unknown model {model!r}")
            await check_if_match(tx.conn, model, alias, if_match)
            status = await must_have_version(tx.conn, model, body.version)
            rollout = await store.get_rollout(tx.conn, model)
            aliases = await store.get_aliases(tx.conn, model)
            transition = domain.manual_promote(
                rollout, aliases, body.version, status, alias, now, body.traffic_percent
            )
            if body.reason:
                transition = dataclasses.replace(transition, reason=body.reason)
            await apply(
                tx,
                model,
                transition,
                actor=caller.principal,
                cause="manual",
                now=now,
                cause_event_id=None,
                cache=cache,
                audit=audit_trail,
            )
            return {"aliases": await store.get_aliases(tx.conn, model)}

    @api.post(
        "/models/{model}/aliases/{alias}/rollback",
        **perm(
            "rollback",
            {
                404: "Unknown model.",
                409: "Nowhere to roll back to (no version on the alias, no rollback target).",
                412: "If-Match did not match the alias' current ETag: it moved since.",
            },
        ),
    )
    async def rollback(
        caller: Annotated[Caller, Depends(needs("rollback"))],
        model: ModelPath,
        alias: AliasPath,
        body: Annotated[RollbackRequest | None, Body()] = None,
        if_match: Annotated[
            str | None,
            Header(
                alias="If-Match",
                max_length=256,
                description="ETag of the alias as last read; 412 if it moved since.",
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Roll an alias back by hand (→ ModelRolledBack); 409 when there is nowhere to go."""
        now = _now()
        async with runtime.transaction() as tx:
            if not await store.lock_existing_model(tx.conn, model):
                raise HTTPException(404, f"unknown model {model!r}")
            await check_if_match(tx.conn, model, alias, if_match)
            rollout = await store.get_rollout(tx.conn, model)
            aliases = await store.get_aliases(tx.conn, model)
            transition = domain.manual_rollback(rollout, aliases, alias, now)
            if body is not None and body.reason:
                transition = dataclasses.replace(transition, reason=body.reason)
            await apply(
                tx,
                model,
                transition,
                actor=caller.principal,
                cause="manual",
                now=now,
                cause_event_id=None,
                cache=cache,
                audit=audit_trail,
            )
            return {"aliases": await store.get_aliases(tx.conn, model)}

    decision_errors = {
        404: "Unknown model, version, or manual stage of the model.",
        409: "The version is already rejected.",
    }

    async def decide(
        caller: Caller, model: str, version: str, stage: str, decision: str, comment: str | None
    ) -> dict[str, Any]:
        _stage(config, model, stage, "manual")
        async with runtime.transaction() as tx:
            status = await must_have_version(tx.conn, model, version)
            if status == "rejected":
                raise domain.Conflict(f"version {version} is already rejected")
            kind = ApprovalGranted if decision == "approved" else ApprovalRejected
            correlation, traceparent = await store.lifecycle_of(tx.conn, model, version)
            with resume_trace(traceparent, "mlcp.registry.approval", model=model, stage=stage):
                event = await tx.emit(
                    kind(
                        model=model,
                        version=version,
                        stage=stage,
                        approver=caller.principal,
                        comment=comment,
                    ),
                    correlationid=correlation,
                )
                # Its checkpoint belongs to the same lifecycle and trace.
                await audit_trail.append(
                    tx,
                    actor=caller.principal,
                    action="approval",
                    at=_now(),
                    model=model,
                    version=version,
                    after={"stage": stage, "decision": decision, "comment": comment},
                    cause_event_id=event.id,
                    correlationid=correlation,
                )
        return {"event_id": event.id, "decision": decision}

    @api.post(
        "/models/{model}/versions/{version}/stages/{stage}/approve",
        status_code=202,
        **perm("approve", decision_errors),
    )
    async def approve(
        caller: Annotated[Caller, Depends(needs("approve"))],
        model: ModelPath,
        version: VersionPath,
        stage: StagePath,
        body: Annotated[DecisionRequest | None, Body()] = None,
    ) -> dict[str, Any]:
        """Approve a pending manual stage (→ ApprovalGranted for the gatekeeper)."""
        return await decide(
            caller, model, version, stage, "approved", body.comment if body else None
        )

    @api.post(
        "/models/{model}/versions/{version}/stages/{stage}/reject",
        status_code=202,
        **perm("approve", decision_errors),
    )
    async def reject(
        caller: Annotated[Caller, Depends(needs("approve"))],
        model: ModelPath,
        version: VersionPath,
        stage: StagePath,
        body: Annotated[DecisionRequest | None, Body()] = None,
    ) -> dict[str, Any]:
        """Reject a pending manual stage (→ ApprovalRejected for the gatekeeper)."""
        return await decide(
            caller, model, version, stage, "rejected", body.comment if body else None
        )

    @api.post(
        "/models/{model}/versions/{version}/checks/{check}",
        status_code=202,
        **perm("report_check", {404: "Unknown model, version, or external check of the model."}),
    )
    async def report_check(
        caller: Annotated[Caller, Depends(needs("report_check"))],
        model: ModelPath,
        version: VersionPath,
        check: CheckPath,
        body: Annotated[CheckReport, Body()],
    ) -> dict[str, Any]:
        """Report an external check's result (→ mlcp.check.reported.v1)."""
        stage = _stage(config, model, check, "external")
        async with runtime.transaction() as tx:
            await must_have_version(tx.conn, model, version)
            correlation, traceparent = await store.lifecycle_of(tx.conn, model, version)
            with resume_trace(traceparent, "mlcp.registry.check", model=model, check=stage.name):
                event = await tx.emit(
                    ExternalCheckReported(
                        model=model,
                        version=version,
                        check=stage.name,
                        status=body.status,
                        reporter=caller.principal,
                        url=body.url,
                        details=body.details,
                    ),
                    correlationid=correlation,
                )
                # Its checkpoint belongs to the same lifecycle and trace.
                await audit_trail.append(
                    tx,
                    actor=caller.principal,
                    action="check_reported",
                    at=_now(),
                    model=model,
                    version=version,
                    after={"check": stage.name, "status": body.status, "url": body.url},
                    cause_event_id=event.id,
                    correlationid=correlation,
                )
        return {"event_id": event.id, "check": stage.name, "status": body.status}

    # --- audit ---------------------------------------------------------------------------------

    Auditor = Annotated[Caller, Depends(needs("audit_read"))]

    @api.get("/audit", **perm("audit_read"))
    async def audit(
        _: Auditor,
        model: Annotated[str | None, Query(pattern=SLUG_PATTERN)] = None,
        action: Annotated[str | None, Query(pattern=r"^[a-z_]{1,64}$")] = None,
        actor: Annotated[PrincipalStr | None, Query()] = None,
        since: Annotated[Timestamp | None, Query()] = None,
        until: Annotated[Timestamp | None, Query()] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """Audit rows (oldest first): actor, action, before, after, cause event, hashes."""
        async with runtime.pool.acquire() as conn:
            items = await store.audit_rows(
                conn,
                model=model,
                action=action,
                actor=actor,
                since=since,
                until=until,
                limit=limit,
                offset=offset,
            )
        return _page(items, limit, offset)

    @api.get("/audit/verify", response_model=AuditVerdict, **perm("audit_read"))
    async def audit_verify(_: Auditor) -> dict[str, Any]:
        """Check the keyed chain against the newest signed checkpoints on Kafka; names the
        first row that does not hold and what happened to it."""
        keyring, chain_name = audit_trail.keyring, audit_trail.chain_name
        # Checkpoints first, then the table: a row committed meanwhile can only be newer than
        # every checkpoint read, never look like a deleted one.
        checkpoints, warning = await read_checkpoints(runtime.settings, chain_name, keyring)
        async with runtime.pool.acquire() as conn:
            verdict = await verify_chain(conn, keyring, checkpoints, warning=warning)
        return verdict.as_dict()

    # --- tokens and grants ---------------------------------------------------------------------

    Admin = Annotated[Caller, Depends(needs("manage_tokens"))]

    # OpenAPI links: what a client (or a stateful fuzzer) can do next with an answer's ids.
    token_links = {
        "AddGrant": {"operationId": "add_grant", "parameters": {"token_id": "$response.body#/id"}},
        "RevokeToken": {
            "operationId": "revoke_token",
            "parameters": {"token_id": "$response.body#/id"},
        },
    }
    grant_links = {
        "RevokeGrant": {
            "operationId": "revoke_grant",
            "parameters": {
                "token_id": "$response.body#/token_id",
                "grant_id": "$response.body#/id",
            },
        }
    }

    @api.post(
        "/tokens",
        status_code=201,
        operation_id="create_token",
        **perm("manage_tokens", links={201: token_links}),
    )
    async def create_token(caller: Admin, body: Annotated[TokenRequest, Body()]) -> dict[str, Any]:
        """Issue a token (shown once) with its grants."""
        now = _now()
        token_id, token, secret_hash = new_token()
        async with runtime.transaction() as tx:
            await store.insert_token(
                tx.conn, token_id, body.principal, secret_hash, body.description, caller.principal
            )
            grants = [
                await store.insert_grant(tx.conn, token_id, g.role, g.expiry(now), caller.principal)
                for g in body.grants
            ]
            await audit_trail.append(
                tx,
                actor=caller.principal,
                action="token_created",
                at=now,
                after={"token_id": token_id, "principal": body.principal, "grants": grants},
            )
        created: dict[str, Any] = jsonable_encoder(
            {"id": token_id, "token": token, "principal": body.principal, "grants": grants}
        )
        return created

    @api.get("/tokens", **perm("manage_tokens"))
    async def list_tokens(_: Admin) -> list[dict[str, Any]]:
        """Every token with its grants (never a secret)."""
        async with runtime.pool.acquire() as conn:
            return await store.list_tokens(conn)

    TokenId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]

    @api.delete(
        "/tokens/{token_id}",
        status_code=204,
        operation_id="revoke_token",
        **perm("manage_tokens", {404: "No active token with this id."}),
    )
    async def revoke_token(caller: Admin, token_id: TokenId) -> Response:
        """Revoke a token: it stops working at once."""
        now = _now()
        async with runtime.transaction() as tx:
            if not await store.revoke_token(tx.conn, token_id, now):
                raise HTTPException(404, f"no active token {token_id!r}")
            await cache.invalidate(tx.conn, token_scope(token_id))
            await audit_trail.append(
                tx,
                actor=caller.principal,
                action="token_revoked",
                at=now,
                before={"token_id": token_id},
                after={"token_id": token_id, "revoked_at": now},
            )
        return Response(status_code=204)

    @api.post(
        "/tokens/{token_id}/grants",
        status_code=201,
        operation_id="add_grant",
        **perm("manage_tokens", {404: "Unknown token."}, links={201: grant_links}),
    )
    async def add_grant(
        caller: Admin, token_id: TokenId, body: Annotated[GrantRequest, Body()]
    ) -> dict[str, Any]:
        """Give a token a role, optionally until a time."""
        now = _now()
        async with runtime.transaction() as tx:
            if not await store.token_exists(tx.conn, token_id):
                raise HTTPException(404, f"unknown token {token_id!r}")
            await cache.invalidate(tx.conn, token_scope(token_id))
            grant = await store.insert_grant(
                tx.conn, token_id, body.role, body.expiry(now), caller.principal
            )
            await audit_trail.append(
                tx, actor=caller.principal, action="grant_added", at=now, after=grant
            )
        encoded: dict[str, Any] = jsonable_encoder(grant)
        return encoded

    @api.delete(
        "/tokens/{token_id}/grants/{grant_id}",
        status_code=204,
        operation_id="revoke_grant",
        **perm("manage_tokens", {404: "The token has no active grant with this id."}),
    )
    async def revoke_grant(
        caller: Admin, token_id: TokenId, grant_id: Annotated[int, Path(ge=1, le=2**62)]
    ) -> Response:
        """Revoke one grant."""
        now = _now()
        async with runtime.transaction() as tx:
            grant = await store.revoke_grant(tx.conn, grant_id, caller.principal, now)
            if grant is None or grant["token_id"] != token_id:
                raise HTTPException(404, f"token {token_id!r} has no active grant {grant_id}")
            await cache.invalidate(tx.conn, token_scope(token_id))
            await audit_trail.append(
                tx, actor=caller.principal, action="grant_revoked", at=now, after=grant
            )
        return Response(status_code=204)

    return api
