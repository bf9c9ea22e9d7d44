"""Reading the audit log and verifying its keyed chain against the signed checkpoints."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel, Field

from mlcp.contracts.types import SLUG_PATTERN
from mlcp.registry import chain
from mlcp.registry.api.common import (
    Context,
    Limit,
    Offset,
    PrincipalStr,
    Timestamp,
    needs,
    page,
    perm,
)
from mlcp.registry.audit import read_checkpoints, verify_chain
from mlcp.registry.auth import Caller
from mlcp.registry.store import audit_log


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


Auditor = Annotated[Caller, Depends(needs("audit_read"))]


def add_routes(api: FastAPI, ctx: Context) -> None:
    """Add the routes under ``/audit`` to ``api``."""
    runtime, audit_trail = ctx.runtime, ctx.audit_trail

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
            items = await audit_log.audit_rows(
                conn,
                model=model,
                action=action,
                actor=actor,
                since=since,
                until=until,
                limit=limit,
                offset=offset,
            )
        return page(items, limit, offset)

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
