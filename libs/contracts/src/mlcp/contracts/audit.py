"""Events of the registry's audit log: the signed head of its hash chain."""

from typing import Annotated, ClassVar

from pydantic import Field, StringConstraints

from mlcp.contracts import topics
from mlcp.contracts.base import EventData
from mlcp.contracts.types import Sha256Hex, UtcDatetime

ChainName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,62}$"),
    Field(description="The audit chain: the registry's PostgreSQL schema name, e.g. 'registry'."),
]
KeyId = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{16}$"),
    Field(description="First 16 hex digits of the SHA-256 of the key's Ed25519 public key."),
]
Ed25519Signature = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{128}$"),
    Field(description="Ed25519 signature, 128 lowercase hex digits."),
]


class AuditCheckpointed(EventData):
    """The registry's audit chain has a new head, signed with the registry's audit key.

    Emitted by the registry for every audit row it appends (a governance action: registration,
    promotion, rollback, rejection, approval, check report, token or grant change), through the
    outbox in the same transaction as the row. The topic keeps every checkpoint for ever
    (``retention.ms=-1``): verifiers compare the audit table with the newest checkpoints they
    can read, so rows deleted at the end of the table, or the whole table, are noticed. The
    signature covers ``chain``, ``seq``, ``hash``, ``key_id`` and ``signed_at``. Key: ``chain``.
    """

    TYPE: ClassVar[str] = topics.AUDIT_CHECKPOINTED
    KEY_FIELD: ClassVar[str] = "chain"

    chain: ChainName
    seq: Annotated[int, Field(ge=1, le=2**53 - 1)]
    """Sequence number of the audit row that is the chain's head."""
    hash: Sha256Hex
    """That row's keyed hash (HMAC-SHA256, hex)."""
    key_id: KeyId
    """The key that signed this checkpoint (and keyed the row)."""
    signed_at: UtcDatetime
    signature: Ed25519Signature
