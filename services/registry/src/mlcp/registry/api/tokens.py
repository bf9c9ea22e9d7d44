"""Who the caller is, and the API tokens with their role grants (admins only)."""

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Self

from fastapi import Body, Depends, FastAPI, HTTPException, Path, Response
from fastapi.encoders import jsonable_encoder
from pydantic import ConfigDict, Field, model_validator

from mlcp.registry.api.common import (
    Comment,
    Context,
    PrincipalStr,
    StrictBody,
    Timestamp,
    needs,
    now,
    perm,
)
from mlcp.registry.auth import Caller, new_token
from mlcp.registry.cache import token_scope
from mlcp.registry.store import tokens

Role = Literal["viewer", "operator", "approver", "admin", "auditor"]
MAX_TTL_S = 10 * 365 * 86400


class GrantRequest(StrictBody):
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


class TokenRequest(StrictBody):
    """A new API token for a person or a system, with its first grants."""

    principal: PrincipalStr
    description: Comment | None = None
    grants: list[GrantRequest] = Field(default_factory=list, max_length=10)


Admin = Annotated[Caller, Depends(needs("manage_tokens"))]
TokenId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]

# OpenAPI links: what a client (or a stateful fuzzer) can do next with an answer's ids.
TOKEN_LINKS = {
    "AddGrant": {"operationId": "add_grant", "parameters": {"token_id": "$response.body#/id"}},
    "RevokeToken": {
        "operationId": "revoke_token",
        "parameters": {"token_id": "$response.body#/id"},
    },
}
GRANT_LINKS = {
    "RevokeGrant": {
        "operationId": "revoke_grant",
        "parameters": {
            "token_id": "$response.body#/token_id",
            "grant_id": "$response.body#/id",
        },
    }
}


def add_whoami(api: FastAPI) -> None:
    """Add ``GET /whoami`` (open to every authenticated caller) to ``api``."""

    @api.get("/whoami", **perm(None))
    async def whoami(caller: Annotated[Caller, Depends(needs(None))]) -> dict[str, Any]:
        """Who the token belongs to and its live roles."""
        return {"principal": caller.principal, "roles": list(caller.roles)}


def add_routes(api: FastAPI, ctx: Context) -> None:
    """Add the routes under ``/tokens`` to ``api``."""
    runtime, cache, audit_trail = ctx.runtime, ctx.cache, ctx.audit_trail

    @api.post(
        "/tokens",
        status_code=201,
        operation_id="create_token",
        **perm("manage_tokens", links={201: TOKEN_LINKS}),
    )
    async def create_token(caller: Admin, body: Annotated[TokenRequest, Body()]) -> dict[str, Any]:
        """Issue a token (shown once) with its grants."""
        at = now()
        token_id, token, secret_hash = new_token()
        async with runtime.transaction() as tx:
            await tokens.insert_token(
                tx.conn, token_id, body.principal, secret_hash, body.description, caller.principal
            )
            grants = [
                await tokens.insert_grant(tx.conn, token_id, g.role, g.expiry(at), caller.principal)
                for g in body.grants
            ]
            await audit_trail.append(
                tx,
                actor=caller.principal,
                action="token_created",
                at=at,
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
            return await tokens.list_tokens(conn)

    @api.delete(
        "/tokens/{token_id}",
        status_code=204,
        operation_id="revoke_token",
        **perm("manage_tokens", {404: "No active token with this id."}),
    )
    async def revoke_token(caller: Admin, token_id: TokenId) -> Response:
        """Revoke a token: it stops working at once."""
        at = now()
        async with runtime.transaction() as tx:
            if not await tokens.revoke_token(tx.conn, token_id, at):
                raise HTTPException(404, f"no active token {token_id!r}")
            await cache.invalidate(tx.conn, token_scope(token_id))
            await audit_trail.append(
                tx,
                actor=caller.principal,
                action="token_revoked",
                at=at,
                before={"token_id": token_id},
                after={"token_id": token_id, "revoked_at": at},
            )
        return Response(status_code=204)

    @api.post(
        "/tokens/{token_id}/grants",
        status_code=201,
        operation_id="add_grant",
        **perm("manage_tokens", {404: "Unknown token."}, links={201: GRANT_LINKS}),
    )
    async def add_grant(
        caller: Admin, token_id: TokenId, body: Annotated[GrantRequest, Body()]
    ) -> dict[str, Any]:
        """Give a token a role, optionally until a time."""
        at = now()
        async with runtime.transaction() as tx:
            if not await tokens.token_exists(tx.conn, token_id):
                raise HTTPException(404, f"unknown token {token_id!r}")
            await cache.invalidate(tx.conn, token_scope(token_id))
            grant = await tokens.insert_grant(
                tx.conn, token_id, body.role, body.expiry(at), caller.principal
            )
            await audit_trail.append(
                tx, actor=caller.principal, action="grant_added", at=at, after=grant
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
        at = now()
        async with runtime.transaction() as tx:
            grant = await tokens.revoke_grant(tx.conn, grant_id, caller.principal, at)
            if grant is None or grant["token_id"] != token_id:
                raise HTTPException(404, f"token {token_id!r} has no active grant {grant_id}")
            await cache.invalidate(tx.conn, token_scope(token_id))
            await audit_trail.append(
                tx, actor=caller.principal, action="grant_revoked", at=at, after=grant
            )
        return Response(status_code=204)
