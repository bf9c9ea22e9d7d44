"""Reading models and versions: lists, metadata, lineage."""

import dataclasses
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query

from mlcp.registry import domain
from mlcp.registry.api.common import (
    UNKNOWN_MODEL,
    UNKNOWN_VERSION,
    Context,
    Limit,
    ModelPath,
    Offset,
    Reader,
    VersionPath,
    must_have_model,
    page,
    perm,
)
from mlcp.registry.store import rollouts, versions


def add_routes(api: FastAPI, ctx: Context) -> None:
    """Add the routes under ``/models`` that read models and versions to ``api``."""
    runtime = ctx.runtime

    @api.get("/models", **perm("read"))
    async def list_models(
        _: Reader,
        limit: Limit = 50,
        offset: Offset = 0,
        prefix: Annotated[str | None, Query(pattern=r"^[a-z0-9._-]{1,128}$")] = None,
    ) -> dict[str, Any]:
        """Models by name, with latest, production and canary versions."""
        async with runtime.pool.acquire() as conn:
            items = await versions.list_models(conn, prefix=prefix, limit=limit, offset=offset)
        return page(items, limit, offset)

    @api.get("/models/{model}", **perm("read", UNKNOWN_MODEL))
    async def get_model(_: Reader, model: ModelPath) -> dict[str, Any]:
        """A model: its aliases and rollout state."""
        async with runtime.pool.acquire() as conn:
            await must_have_model(conn, model)
            rollout = await rollouts.get_rollout(conn, model)
            aliases = await rollouts.get_aliases(conn, model)
            latest = await versions.latest_version(conn, model)
        return {
            "name": model,
            "latest_version": latest.version if latest else None,
            "aliases": aliases,
            "rollout": dataclasses.asdict(rollout),
        }

    @api.get("/models/{model}/versions", **perm("read", UNKNOWN_MODEL))
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
            items = await versions.list_versions(
                conn, model, status=status, limit=limit, offset=offset
            )
        return page(items, limit, offset)

    @api.get("/models/{model}/versions/{version}", **perm("read", UNKNOWN_VERSION))
    async def get_version(_: Reader, model: ModelPath, version: VersionPath) -> dict[str, Any]:
        """A version with its full standard metadata."""
        async with runtime.pool.acquire() as conn:
            await must_have_model(conn, model)
            found = await versions.get_version(conn, model, version)
        if found is None:
            raise HTTPException(404, f"model {model!r} has no version {version!r}")
        return dataclasses.asdict(found)

    @api.get("/models/{model}/versions/{version}/lineage", **perm("read", UNKNOWN_VERSION))
    async def lineage(_: Reader, model: ModelPath, version: VersionPath) -> dict[str, Any]:
        """Version → training run → data: every batch with its uri, rows and sha256, and the
        dataset digest (their fingerprint, recipe in the RunFinished schema) → artifact."""
        async with runtime.pool.acquire() as conn:
            await must_have_model(conn, model)
            v = await versions.get_version(conn, model, version)
        if v is None:
            raise HTTPException(404, f"model {model!r} has no version {version!r}")
        return {
            "model": model,
            "version": version,
            "previous_version": v.previous_version,
            "bump": v.bump,
            "run": {
                "run_id": v.run_id,
                "reason": v.training_reason,
                "code_version": v.code_version,
                "entrypoint": v.entrypoint,
                "params": v.params,
                "metrics": v.metrics,
                "environment": v.environment,
                "duration_s": v.duration_s,
                "reported_by": v.owner,
                "event_id": v.cause_event_id,
            },
            "datasets": domain.lineage_datasets(v.datasets),
            "artifact": {
                "uri": v.artifact_uri,
                "sha256": v.artifact_sha256,
                "format": v.artifact_format,
                "size_bytes": v.artifact_size,
            },
        }
