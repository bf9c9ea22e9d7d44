"""The audit chain's rules, pure: row hashes, signed checkpoints, and the streaming verifier.

Every audit row carries ``prev_hash`` (the hash of the row before it) and ``hash``:

* a **keyed** row (``key_id`` set): ``hash = HMAC-SHA256(mac key of key_id, "mlcp-audit-v2"
  + prev_hash + canonical JSON of the row's content)`` — nobody without the key can compute it,
  so a row cannot be edited, re-hashed, recomputed or appended unnoticed;
* a **legacy** row (``key_id`` NULL, written before the chain was keyed): the old unkeyed
  ``sha256(prev_hash + "\\n" + canonical JSON)``. Legacy rows may only form the start of the
  table: the first keyed row after them (``anchor`` at the first start with a key) seals them.

After each row the registry publishes a **checkpoint** on Kafka: ``(chain, seq, hash, key_id,
signed_at)`` signed with the key's Ed25519 key. Checkpoints live outside the database, so rows
deleted from the end of the table — or all of them — are found by comparing the table with the
newest checkpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from mlcp.registry.keys import AuditKey, Keyring

GENESIS = "0" * 64
"""The ``prev_hash`` of the first row."""
_ROW_DOMAIN = "mlcp-audit-v2"
_CHECKPOINT_DOMAIN = "mlcp-audit-checkpoint-v1"

Problem = Literal[
    "missing",
    "relinked",
    "changed",
    "recomputed",
    "forged",
    "unknown_key",
    "checkpoint_mismatch",
    "truncated",
    "emptied",
]


def canonical(value: Any) -> str:
    """Deterministic JSON text (sorted keys, no spaces) of a JSON-compatible value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def legacy_hash(prev_hash: str, entry: Mapping[str, Any]) -> str:
    """The unkeyed hash of a row written before the chain was keyed (kept only to verify)."""
    return hashlib.sha256(f"{prev_hash}\n{canonical(dict(entry))}".encode()).hexdigest()


def keyed_hash(mac_key: bytes, prev_hash: str, entry: Mapping[str, Any]) -> str:
    """The hash of a keyed row: HMAC-SHA256 over the previous hash and the row's content."""
    message = f"{_ROW_DOMAIN}\n{prev_hash}\n{canonical(dict(entry))}".encode()
    return hmac.new(mac_key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AuditRow:
    """One row as stored: its content (``entry``, exactly what is hashed) and its hashes."""

    seq: int
    key_id: str | None
    prev_hash: str
    hash: str
    entry: Mapping[str, Any]


# --- checkpoints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A signed chain head: row ``seq`` of ``chain`` had ``hash`` at ``signed_at``."""

    chain: str
    seq: int
    hash: str
    key_id: str
    signed_at: datetime
    signature: str

    def summary(self) -> dict[str, Any]:
        """What a verdict shows of it."""
        return {
            "seq": self.seq,
            "hash": self.hash,
            "key_id": self.key_id,
            "signed_at": self.signed_at.isoformat(),
        }


def checkpoint_message(chain: str, seq: int, digest: str, key_id: str, at: datetime) -> bytes:
    """The bytes a checkpoint's signature covers."""
    body = {"chain": chain, "seq": seq, "hash": digest, "key_id": key_id, "at": at.isoformat()}
    return f"{_CHECKPOINT_DOMAIN}\n{canonical(body)}".encode()


def sign_checkpoint(key: AuditKey, chain: str, seq: int, digest: str, at: datetime) -> Checkpoint:
    """A checkpoint of row ``seq`` (hash ``digest``), signed with ``key``."""
    signature = key.sign(checkpoint_message(chain, seq, digest, key.key_id, at))
    return Checkpoint(chain, seq, digest, key.key_id, at, signature)


def checkpoint_is_authentic(checkpoint: Checkpoint, keyring: Keyring) -> bool:
    """Whether a key of ``keyring`` signed ``checkpoint`` exactly as it reads."""
    key = keyring.get(checkpoint.key_id)
    message = checkpoint_message(
        checkpoint.chain, checkpoint.seq, checkpoint.hash, checkpoint.key_id, checkpoint.signed_at
    )
    return key is not None and key.verifies(message, checkpoint.signature)


# --- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The outcome of a verification: intact, or the first bad row, what and why."""

    ok: bool
    rows_checked: int
    """Rows read and found intact before the first problem (all of them when ok)."""
    first_bad_seq: int | None
    problem: Problem | None
    reason: str | None
    checkpoint: dict[str, Any] | None
    """The newest signed checkpoint the verifier compared the table with."""
    unanchored_rows: int
    """Rows after the newest checkpoint (normal for a few: their checkpoint is on its way)."""
    warning: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the API's and the command's answer)."""
        return asdict(self)


@dataclass(frozen=True)
class _Failure:
    seq: int
    problem: Problem
    reason: str


class ChainVerifier:
    """Checks the rows of one chain in seq order, a batch at a time, in bounded memory.

    Feed it the rows (``feed`` returns False once the verdict is settled: stop reading), then
    ``finish``. ``checkpoints`` are the authentic checkpoints the caller could read (a bounded
    number of the newest): each row they name must have their hash, and the table must reach
    the newest one.
    """

    def __init__(
        self,
        mac_key: Callable[[str], bytes | None],
        checkpoints: Sequence[Checkpoint] = (),
        *,
        checkpoint_warning: str | None = None,
    ) -> None:
        self._mac_key = mac_key
        self._heads: dict[int, str | None] = {}
        for cp in checkpoints:
            known = self._heads.get(cp.seq, cp.hash)
            # Two signed heads for one seq: the chain was cut back and grown again after the
            # first was signed. None marks the fork.
            self._heads[cp.seq] = cp.hash if known == cp.hash else None
        self._latest = max(checkpoints, key=lambda cp: (cp.seq, cp.signed_at), default=None)
        self._warning = checkpoint_warning
        self._expected = 1
        self._prev = GENESIS
        self._keyed_seen = False
        self._checked = 0
        self._pending: AuditRow | None = None  # a row whose hash fails, waiting for the next
        self._failure: _Failure | None = None

    def feed(self, rows: Iterable[AuditRow]) -> bool:
        """Check the next rows; False once a problem is settled (reading on is pointless)."""
        for row in rows:
            if self._failure is not None:
                return False
            if self._pending is not None:
                self._failure = self._explain(self._pending, row)
                return False
            self._check(row)
        return self._failure is None

    def finish(self) -> Verdict:
        """The verdict after the last row."""
        if self._failure is None and self._pending is not None:
            self._failure = self._explain(self._pending, None)
        last = self._expected - 1
        if self._failure is None and self._latest is not None and self._latest.seq > last:
            self._failure = self._cut_short(last, self._latest)
        latest = self._latest
        unanchored = max(0, self._checked - latest.seq) if latest is not None else self._checked
        warning = self._warning
        if latest is None and warning is None and self._checked:
            warning = (
                "no signed checkpoint of this chain was found: rows deleted at the end of the "
                "table (or all of them) cannot be detected"
            )
        failure = self._failure
        return Verdict(
            ok=failure is None,
            rows_checked=self._checked,
            first_bad_seq=failure.seq if failure else None,
            problem=failure.problem if failure else None,
            reason=failure.reason if failure else None,
            checkpoint=latest.summary() if latest is not None else None,
            unanchored_rows=unanchored,
            warning=warning,
        )

    # -- one row ----------------------------------------------------------------------------

    def _check(self, row: AuditRow) -> None:
        if row.seq != self._expected:
            first, last = self._expected, row.seq - 1
            gone = f"row {first} is" if first == last else f"rows {first}-{last} are"
            self._failure = _Failure(first, "missing", f"{gone} missing (deleted)")
            return
        if row.prev_hash != self._prev:
            self._failure = _Failure(
                row.seq,
                "relinked",
                f"prev_hash of row {row.seq} is not the hash of the row before it "
                "(rows removed and renumbered, moved or swapped)",
            )
            return
        holds = self._hash_holds(row)
        if isinstance(holds, _Failure):
            self._failure = holds
            return
        if not holds:
            self._pending = row
            return
        head = self._heads.get(row.seq, row.hash)
        if head != row.hash:
            self._failure = _Failure(
                row.seq,
                "checkpoint_mismatch",
                f"row {row.seq} is not the row a signed checkpoint recorded: the chain up to "
                "it was rewritten (by someone holding the key) or cut back and grown again",
            )
            return
        self._checked += 1
        self._prev = row.hash
        self._expected += 1

    def _hash_holds(self, row: AuditRow) -> _Failure | bool:
        """Whether the row's hash holds, or a failure that needs no more rows to explain
        (a False needs the next row: see ``_explain``)."""
        if row.key_id is None:
            if self._keyed_seen:
                return _Failure(
                    row.seq,
                    "forged",
                    f"row {row.seq} has no key id after keyed rows: the registry did not write it",
                )
            expected = legacy_hash(row.prev_hash, row.entry)
        else:
            key = self._mac_key(row.key_id)
            if key is None:
                return _Failure(
                    row.seq,
                    "unknown_key",
                    f"row {row.seq} names key {row.key_id}, which is not in the keyring: forged, "
                    "or a retired key is missing from MLCP_AUDIT_KEY(_FILE)",
                )
            self._keyed_seen = True
            expected = keyed_hash(key, row.prev_hash, row.entry)
        return hmac.compare_digest(expected, row.hash)

    def _next_holds(self, row: AuditRow) -> bool:
        if row.key_id is None:
            return not self._keyed_seen and legacy_hash(row.prev_hash, row.entry) == row.hash
        key = self._mac_key(row.key_id)
        return key is not None and hmac.compare_digest(
            keyed_hash(key, row.prev_hash, row.entry), row.hash
        )

    def _explain(self, bad: AuditRow, after: AuditRow | None) -> _Failure:
        """Name what happened to ``bad`` (its hash does not hold), from the row after it."""
        seq = bad.seq
        if self._latest is not None and seq > self._latest.seq:
            return _Failure(
                seq,
                "forged",
                f"row {seq} does not hold under the registry's key and comes after the newest "
                f"signed checkpoint (row {self._latest.seq}): it was appended by someone else",
            )
        links = after is not None and after.seq == seq + 1 and after.prev_hash == bad.hash
        if after is not None and links and not self._next_holds(after):
            return _Failure(
                seq,
                "recomputed",
                f"rows from {seq} on were re-hashed without the key: each links to the one "
                "before it, but none matches its keyed hash",
            )
        if after is not None and not links:
            return _Failure(
                seq,
                "changed",
                f"row {seq} was changed and re-hashed alone: its hash matches neither its "
                "content nor the next row's link",
            )
        return _Failure(
            seq,
            "changed",
            f"row {seq} was changed: its content no longer matches its keyed hash",
        )

    @staticmethod
    def _cut_short(last: int, latest: Checkpoint) -> _Failure:
        at = latest.signed_at.isoformat()
        if last == 0:
            return _Failure(
                1,
                "emptied",
                f"the table has no rows, but a checkpoint signed at {at} covers {latest.seq}: "
                "the rows were deleted or the table truncated",
            )
        return _Failure(
            last + 1,
            "truncated",
            f"the table ends at row {last}, but a checkpoint signed at {at} covers "
            f"{latest.seq}: rows {last + 1}-{latest.seq} were deleted from its end",
        )
