"""Events of the approval DAG: stage results, approvals and external checks."""

from typing import Annotated, ClassVar, Self

from pydantic import Field, model_validator

from mlcp.contracts import topics
from mlcp.contracts.base import EventData
from mlcp.contracts.common import Evidence
from mlcp.contracts.types import (
    MAX_EVIDENCE,
    MAX_STAGES,
    CheckKind,
    CheckStatus,
    ModelName,
    Principal,
    SemVer,
    StageName,
    Text,
    Uri,
    UtcDatetime,
)

EvidenceList = Annotated[tuple[Evidence, ...], Field(max_length=MAX_EVIDENCE, fail_fast=True)]


class CheckPassed(EventData):
    """One stage of a version's approval DAG passed.

    Emitted by the gatekeeper when a stage's check succeeds (for ``manual`` and ``external``
    stages, after ApprovalGranted / a passed ExternalCheckReported). Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.GATE_CHECK_PASSED

    model: ModelName
    version: SemVer
    stage: StageName
    kind: CheckKind
    evidence: EvidenceList = ()
    """The comparisons that made the stage pass (empty for manual/external stages)."""


class GateFailed(EventData):
    """A stage of a version's approval DAG failed; the version will not be promoted.

    Emitted by the gatekeeper on a failed check, a rejection, a failed external check or an
    expired approval. The notifier alerts on it. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.GATE_FAILED

    model: ModelName
    version: SemVer
    stage: StageName
    kind: CheckKind
    reason: Text
    """Why, in words: 'accuracy 0.90 < 0.92', 'rejected by alice', 'approval expired' …"""
    evidence: EvidenceList = ()


class GatePassed(EventData):
    """Every stage of a version's approval DAG passed.

    Emitted by the gatekeeper when the last stage passes; the registry then promotes the version
    to canary. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.GATE_PASSED

    model: ModelName
    version: SemVer
    stages: Annotated[
        tuple[StageName, ...], Field(min_length=1, max_length=MAX_STAGES, fail_fast=True)
    ]
    """The stages passed, in the order they passed."""

    @model_validator(mode="after")
    def _unique(self) -> Self:
        if len(set(self.stages)) != len(self.stages):
            raise ValueError("stages must be unique")
        return self


class ApprovalRequested(EventData):
    """A manual stage is waiting for a person with the approver role.

    Emitted by the gatekeeper when a ``manual`` stage's dependencies have passed. The notifier
    tells the approvers. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.APPROVAL_REQUESTED

    model: ModelName
    version: SemVer
    stage: StageName
    expires_at: UtcDatetime | None
    """When the request expires (the stage then fails); null for no expiry."""


class ApprovalGranted(EventData):
    """A person approved a manual stage.

    Emitted by the registry's API after checking the approver's role; the gatekeeper passes the
    stage. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.APPROVAL_GRANTED

    model: ModelName
    version: SemVer
    stage: StageName
    approver: Principal
    comment: Text | None = None


class ApprovalRejected(EventData):
    """A person rejected a manual stage.

    Emitted by the registry's API after checking the approver's role; the gatekeeper fails the
    stage. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.APPROVAL_REJECTED

    model: ModelName
    version: SemVer
    stage: StageName
    approver: Principal
    comment: Text | None = None


class ExternalCheckReported(EventData):
    """An external system (CI, code review) reported the result of an ``external`` stage.

    Emitted by the registry's API for the reporting system; the gatekeeper passes or fails the
    stage named ``check``. Key: ``model``.
    """

    TYPE: ClassVar[str] = topics.CHECK_REPORTED

    model: ModelName
    version: SemVer
    check: StageName
    """Name of the external stage in the model's approval DAG."""
    status: CheckStatus
    reporter: Principal
    """The reporting system or account."""
    url: Uri | None = None
    """Link to the report (CI run, pull request)."""
    details: Text | None = None
