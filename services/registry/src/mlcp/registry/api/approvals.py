"""People's and CI's decisions on a version's gate stages, handed to the gatekeeper as events
(approvals of manual stages, reports of external checks)."""

from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, HTTPException

from mlcp.contracts import (
    ApprovalGranted,
    ApprovalRejected,
    CloudEvent,
    EventData,
    ExternalCheckReported,
)
from mlcp.policy.platform import GateStage, PlatformConfig
from mlcp.registry import domain
from mlcp.registry.api.common import (
    CheckPath,
    Comment,
    Context,
    ModelPath,
    StagePath,
    StrictBody,
    UrlStr,
    VersionPath,
    must_have_version,
    needs,
    now,
    perm,
)
from mlcp.registry.auth import Caller
from mlcp.registry.store import versions
from mlcp.runtime import Tx
from mlcp.runtime.telemetry import resume_trace


class DecisionRequest(StrictBody):
    """An approver's decision on a manual stage."""

    comment: Comment | None = None


class CheckReport(StrictBody):
    """The result of an external check (CI, code review)."""

    status: Literal["passed", "failed"]
    url: UrlStr | None = None
    details: Comment | None = None


def configured_stage(config: PlatformConfig, model: str, name: str, kind: str) -> GateStage:
    """The model's ``kind`` stage called ``name`` (or, external, with that check name); 404."""
    configured = config.models.get(model)
    for stage in configured.gates if configured else []:
        if stage.kind == kind and name in (stage.name, stage.check or stage.name):
            return stage
    raise HTTPException(404, f"model {model!r} has no {kind} stage {name!r} in MLCP_CONFIG")


DECISION_ERRORS = {
    404: "Unknown model, version, or manual stage of the model.",
    409: "The version is already rejected.",
}


def add_routes(api: FastAPI, ctx: Context) -> None:
    """Add the routes that decide gate stages of a version to ``api``."""
    runtime, config, audit_trail = ctx.runtime, ctx.config, ctx.audit_trail

    async def hand_over(
        tx: Tx,
        caller: Caller,
        model: str,
        version: str,
        data: EventData,
        action: str,
        after: dict[str, Any],
        span: str,
        **span_attributes: str,
    ) -> CloudEvent[Any]:
        # The event continues the version's lifecycle: its correlation id and trace, and so
        # does the audit row's checkpoint.
        correlation, traceparent = await versions.lifecycle_of(tx.conn, model, version)
        with resume_trace(traceparent, span, model=model, **span_attributes):
            event = await tx.emit(data, correlationid=correlation)
            await audit_trail.append(
                tx,
                actor=caller.principal,
                action=action,
                at=now(),
                model=model,
                version=version,
                after=after,
                cause_event_id=event.id,
                correlationid=correlation,
            )
        return event

    async def decide(
        caller: Caller, model: str, version: str, stage: str, decision: str, comment: str | None
    ) -> dict[str, Any]:
        configured_stage(config, model, stage, "manual")
        async with runtime.transaction() as tx:
            status = await must_have_version(tx.conn, model, version)
            if status == "rejected":
                raise domain.Conflict(f"version {version} is already rejected")
            kind = ApprovalGranted if decision == "approved" else ApprovalRejected
            data = kind(
                model=model,
                version=version,
                stage=stage,
                approver=caller.principal,
                comment=comment,
            )
            after = {"stage": stage, "decision": decision, "comment": comment}
            event = await hand_over(
                tx,
                caller,
                model,
                version,
                data,
                "approval",
                after,
                "mlcp.registry.approval",
                stage=stage,
            )
        return {"event_id": event.id, "decision": decision}

    @api.post(
        "/models/{model}/versions/{version}/stages/{stage}/approve",
        status_code=202,
        **perm("approve", DECISION_ERRORS),
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
        **perm("approve", DECISION_ERRORS),
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
        stage = configured_stage(config, model, check, "external")
        async with runtime.transaction() as tx:
            await must_have_version(tx.conn, model, version)
            data = ExternalCheckReported(
                model=model,
                version=version,
                check=stage.name,
                status=body.status,
                reporter=caller.principal,
                url=body.url,
                details=body.details,
            )
            after = {"check": stage.name, "status": body.status, "url": body.url}
            event = await hand_over(
                tx,
                caller,
                model,
                version,
                data,
                "check_reported",
                after,
                "mlcp.registry.check",
                check=stage.name,
            )
        return {"event_id": event.id, "check": stage.name, "status": body.status}
