"""Read-only HTTP API of the notifier: channels (never their URLs) and the delivery log.

GET /channels                       name, kind, language, rate, disabled (and why), pending;
                                    a channel whose URL variable is unset: disabled
GET /deliveries?event_id=&channel=&state=&limit=   the delivery log, newest first (with the
    uncertain_refs of earlier messages that may already have carried each delivery)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mlcp.notifier import store
from mlcp.notifier.adapters import Target

# 'uncertain' only on rows settled before migration 002 (the old at-most-once policy).
STATES = ("pending", "sending", "delivered", "failed", "uncertain")


def _error(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


def api(
    pool: Callable[[], asyncpg.Pool],
    targets: dict[str, Target],
    disabled: dict[str, str],
    *,
    unset: Mapping[str, str] | None = None,
) -> Starlette:
    """The API over the runtime's pool; ``disabled`` is the delivery loop's live view,
    ``unset`` the channels disabled at start (channel → its URL variable, not set)."""
    off_at_start = dict(unset or {})

    async def channels(_: Request) -> JSONResponse:
        async with pool().acquire() as conn:
            pending = await store.pending_counts(conn)
        return JSONResponse(
            [
                {
                    "name": t.name,
                    "kind": t.kind,
                    "language": t.language,
                    "rate_per_minute": t.rate_per_minute,
                    "disabled": t.name in disabled,
                    "disabled_reason": disabled.get(t.name),
                    "pending": pending.get(t.name, 0),
                }
                for t in targets.values()
            ]
            + [
                {
                    "name": name,
                    "disabled": True,
                    "disabled_reason": f"{variable} is not set",
                    "pending": pending.get(name, 0),
                }
                for name, variable in off_at_start.items()
            ]
        )

    async def deliveries(request: Request) -> JSONResponse:
        query = request.query_params
        state = query.get("state")
        if state is not None and state not in STATES:
            return _error(f"state: must be one of {', '.join(STATES)}")
        try:
            limit = int(query.get("limit", "100"))
        except ValueError:
            return _error("limit: must be an integer")
        if not 1 <= limit <= 1000:
            return _error("limit: must be between 1 and 1000")
        async with pool().acquire() as conn:
            rows = await store.deliveries(
                conn,
                event_id=query.get("event_id"),
                channel=query.get("channel"),
                state=state,
                limit=limit,
            )
        return JSONResponse([_json(r) for r in rows])

    return Starlette(
        routes=[
            Route("/channels", channels, methods=["GET"]),
            Route("/deliveries", deliveries, methods=["GET"]),
        ]
    )


def _json(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, list):
            value = [str(v) for v in value]
        out[key] = value
    return out
