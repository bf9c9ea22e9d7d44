"""Aliases: resolving them (the inference services' hot path), their history, and moving them
by hand (promotion, rollback) through the same decisions as the event handlers."""

import json
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from pydantic import Field

from mlcp.registry import transitions
from mlcp.registry.api.common import (
    UNKNOWN_MODEL,
    AliasPath,
    Comment,
    Context,
    Limit,
    ModelPath,
    Offset,
    Reader,
    StrictBody,
    Timestamp,
    VersionStr,
    must_have_model,
    must_have_version,
    needs,
    now,
    page,
    perm,
)
from mlcp.registry.auth import Caller
from mlcp.registry.cache import model_scope
from mlcp.registry.outcome import save_and_emit
from mlcp.registry.store import rollouts, versions
from mlcp.registry.transitions import Origin


class PromoteRequest(StrictBody):
    """Point an alias at a version."""

    version: VersionStr
    traffic_percent: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    """canary: its share of traffic (default 10); ignored for production (100)."""
    reason: Comment | None = None


class RollbackRequest(StrictBody):
    """Move an alias back (canary: removed; production: to its rollback target)."""

    reason: Comment | None = None


IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=256,
        description="ETag of the alias as last read; 412 if it moved since.",
    ),
]


def alias_answer(model: str, alias: str, found: dict[str, Any]) -> tuple[str, bytes]:
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


async def check_if_match(conn: Any, model: str, alias: str, if_match: str | None) -> None:
    """Optimistic concurrency: act only if the alias is still where the caller saw it (412)."""
    if if_match is None:
        return
    revision = await rollouts.alias_revision(conn, model, alias)
    current = None if revision is None else f'"{revision}"'
    wanted = [tag.strip().removeprefix("W/") for tag in if_match.split(",")]
    if "*" in wanted and current is not None:
        return
    if current not in wanted:
        raise HTTPException(
            412, f"alias {alias!r} is at ETag {current or 'none'}, not {if_match.strip()}"
        )


def add_routes(api: FastAPI, ctx: Context) -> None:
    """Add the routes under ``/models/{model}/aliases`` to ``api``."""
    runtime, cache = ctx.runtime, ctx.cache

    @api.get("/models/{model}/aliases", **perm("read", UNKNOWN_MODEL))
    async def list_aliases(_: Reader, model: ModelPath) -> dict[str, str]:
        """alias → version, for every alias the model has now."""
        async with runtime.pool.acquire() as conn:
            await must_have_model(conn, model)
            return await rollouts.get_aliases(conn, model)

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
                    found = await rollouts.resolve_alias(conn, model, alias)
                return None if found is None else alias_answer(model, alias, found)

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

    @api.get("/models/{model}/aliases/{alias}/history", **perm("read", UNKNOWN_MODEL))
    async def alias_history(
        _: Reader, model: ModelPath, alias: AliasPath, limit: Limit = 50, offset: Offset = 0
    ) -> dict[str, Any]:
        """Every change of an alias, newest first: who, when, why, the cause event."""
        async with runtime.pool.acquire() as conn:
            await must_have_model(conn, model)
            items = await rollouts.alias_history(conn, model, alias, limit=limit, offset=offset)
        return page(items, limit, offset)

    @api.get("/models/{model}/aliases/{alias}/at", **perm("read", UNKNOWN_MODEL))
    async def alias_at(
        _: Reader, model: ModelPath, alias: AliasPath, time: Annotated[Timestamp, Query()]
    ) -> dict[str, Any]:
        """Which version the alias pointed to at ``time`` (null: none)."""
        async with runtime.pool.acquire() as conn:
            await must_have_model(conn, model)
            change = await rollouts.alias_at(conn, model, alias, time)
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
        if_match: IfMatch = None,
    ) -> dict[str, Any]:
        """Point an alias at a version by hand (→ ModelPromoted); 409 when it conflicts."""
        async with runtime.transaction() as tx:
            # Model row first, then the version: the handlers' lock order (no deadlock).
            if not await versions.lock_existing_model(tx.conn, model):
                raise HTTPException(404, f"unknown model {model!r}")
            await check_if_match(tx.conn, model, alias, if_match)
            status = await must_have_version(tx.conn, model, body.version)
            step = transitions.promote(
                model,
                await rollouts.get_rollout(tx.conn, model),
                await rollouts.get_aliases(tx.conn, model),
                version=body.version,
                status=status,
                alias=alias,
                traffic_percent=body.traffic_percent,
                reason=body.reason,
                origin=Origin(caller.principal, "manual"),
                now=now(),
            )
            await save_and_emit(tx, step, ctx.ports)
            return {"aliases": await rollouts.get_aliases(tx.conn, model)}

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
        if_match: IfMatch = None,
    ) -> dict[str, Any]:
        """Roll an alias back by hand (→ ModelRolledBack); 409 when there is nowhere to go."""
        async with runtime.transaction() as tx:
            if not await versions.lock_existing_model(tx.conn, model):
                raise HTTPException(404, f"unknown model {model!r}")
            await check_if_match(tx.conn, model, alias, if_match)
            step = transitions.rollback(
                model,
                await rollouts.get_rollout(tx.conn, model),
                await rollouts.get_aliases(tx.conn, model),
                alias=alias,
                reason=body.reason if body is not None else None,
                origin=Origin(caller.principal, "manual"),
                now=now(),
            )
            await save_and_emit(tx, step, ctx.ports)
            return {"aliases": await rollouts.get_aliases(tx.conn, model)}
