"""The audit chain's rules on plain values: keyed hashes, signed checkpoints, and the verifier
naming the first bad row for each way an insider with the database can tamper with it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from mlcp.registry.chain import (
    GENESIS,
    AuditRow,
    ChainVerifier,
    Checkpoint,
    Verdict,
    canonical,
    checkpoint_is_authentic,
    keyed_hash,
    legacy_hash,
    sign_checkpoint,
)
from mlcp.registry.keys import Keyring, key_from_seed, new_key_text, parse_keyring

pytestmark = pytest.mark.unit

KEY = key_from_seed(bytes(range(32)))
NEW_KEY = key_from_seed(bytes(range(1, 33)))
RING = Keyring([KEY])
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
N = 8


def content(seq: int, **changes: object) -> dict[str, object]:
    return {
        "seq": seq,
        "at": (T0 + timedelta(seconds=seq)).isoformat(),
        "actor": "alice",
        "action": "promotion",
        "after": {"version": f"1.0.{seq}"},
        **changes,
    }


def keyed(
    n: int, key: object = KEY, first: int = 1, prev: str = GENESIS, actor: str = "alice"
) -> list[AuditRow]:
    rows = []
    for seq in range(first, first + n):
        key_id = key.key_id  # type: ignore[attr-defined]
        entry = {**content(seq, actor=actor), "key_id": key_id}
        digest = keyed_hash(key.mac_key, prev, entry)  # type: ignore[attr-defined]
        rows.append(AuditRow(seq, key_id, prev, digest, entry))
        prev = digest
    return rows


def legacy(n: int) -> list[AuditRow]:
    rows, prev = [], GENESIS
    for seq in range(1, n + 1):
        entry = content(seq)
        digest = legacy_hash(prev, entry)
        rows.append(AuditRow(seq, None, prev, digest, entry))
        prev = digest
    return rows


def checkpoint(rows: Sequence[AuditRow], seq: int, key: object = KEY) -> Checkpoint:
    row = next(r for r in rows if r.seq == seq)
    return sign_checkpoint(key, "registry", seq, row.hash, T0 + timedelta(minutes=seq))  # type: ignore[arg-type]


def verify(
    rows: Sequence[AuditRow], checkpoints: Sequence[Checkpoint] = (), ring: Keyring = RING
) -> Verdict:
    verifier = ChainVerifier(ring.mac_key, checkpoints)
    for start in range(0, len(rows), 3):  # fed in small batches, as the store streams them
        if not verifier.feed(rows[start : start + 3]):
            break
    return verifier.finish()


def edit(row: AuditRow, **changes: object) -> AuditRow:
    return dataclasses.replace(row, entry={**row.entry, **changes})


def rehash_unkeyed(rows: list[AuditRow], start: int) -> list[AuditRow]:
    """What someone without the key does: recompute hashes from ``start`` with sha256."""
    out = rows[: start - 1]
    prev = out[-1].hash if out else GENESIS
    for row in rows[start - 1 :]:
        digest = legacy_hash(prev, row.entry)
        out.append(dataclasses.replace(row, prev_hash=prev, hash=digest))
        prev = digest
    return out


def swap(rows: list[AuditRow], a: int, b: int) -> list[AuditRow]:
    """Rows ``a`` and ``b`` exchange their seq numbers (and so their places)."""
    out = list(rows)
    ra, rb = rows[a - 1], rows[b - 1]
    out[a - 1] = dataclasses.replace(rb, seq=a, entry={**rb.entry, "seq": a})
    out[b - 1] = dataclasses.replace(ra, seq=b, entry={**ra.entry, "seq": b})
    return out


def forged_tail(rows: list[AuditRow], *, right_hash: bool, key_id: str | None) -> list[AuditRow]:
    prev = rows[-1].hash
    entry = content(N + 1, actor="mallory")
    if key_id is not None:
        entry["key_id"] = key_id
    digest = legacy_hash(prev, entry) if right_hash else "f" * 64
    return [*rows, AuditRow(N + 1, key_id, prev, digest, entry)]


Tamper = Callable[[list[AuditRow]], list[AuditRow]]
TAMPERING: dict[str, tuple[Tamper, int, str]] = {
    # kind: (what the insider does to rows 1..8, first bad seq, problem)
    "edit actor": (lambda r: [*r[:3], edit(r[3], actor="mallory"), *r[4:]], 4, "changed"),
    "edit data": (lambda r: [*r[:3], edit(r[3], after={"version": "9.9.9"}), *r[4:]], 4, "changed"),
    "edit time": (lambda r: [*r[:3], edit(r[3], at=T0.isoformat()), *r[4:]], 4, "changed"),
    "re-hash one": (
        lambda r: [*rehash_unkeyed([*r[:3], edit(r[3], actor="x")], 4), *r[4:]],
        4,
        "changed",
    ),
    "re-hash all from a point": (
        lambda r: rehash_unkeyed([*r[:3], edit(r[3], actor="x"), *r[4:]], 4),
        4,
        "recomputed",
    ),
    "delete first": (lambda r: r[1:], 1, "missing"),
    "delete middle": (lambda r: [*r[:4], *r[5:]], 5, "missing"),
    "delete last 3": (lambda r: r[:-3], N - 2, "truncated"),
    "delete all": (lambda r: [], 1, "emptied"),
    "swap two": (lambda r: swap(r, 3, 6), 3, "relinked"),
    "forge with wrong hash": (
        lambda r: forged_tail(r, right_hash=False, key_id=KEY.key_id),
        N + 1,
        "forged",
    ),
    "forge with right hash": (
        lambda r: forged_tail(r, right_hash=True, key_id=None),
        N + 1,
        "forged",
    ),
    "forge with right hash, key id copied": (
        lambda r: forged_tail(r, right_hash=True, key_id=KEY.key_id),
        N + 1,
        "forged",
    ),
}


def test_intact_chain_verifies_against_its_checkpoint() -> None:
    rows = keyed(N)
    verdict = verify(rows, [checkpoint(rows, N)])
    assert verdict.ok, verdict
    assert (verdict.rows_checked, verdict.first_bad_seq, verdict.problem) == (N, None, None)
    assert verdict.checkpoint is not None
    assert verdict.checkpoint["seq"] == N
    assert verdict.unanchored_rows == 0
    assert verdict.warning is None


def test_rows_after_the_newest_checkpoint_are_counted_not_refused() -> None:
    rows = keyed(N)
    verdict = verify(rows, [checkpoint(rows, 5)])
    assert verdict.ok
    assert verdict.unanchored_rows == 3


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_each_tampering_is_named_at_its_first_bad_seq(kind: str) -> None:
    tamper, first_bad, problem = TAMPERING[kind]
    rows = keyed(N)
    verdict = verify(tamper(rows), [checkpoint(rows, N)])
    assert not verdict.ok
    assert (verdict.first_bad_seq, verdict.problem) == (first_bad, problem), verdict.reason
    assert verdict.rows_checked == first_bad - 1
    assert verdict.reason


def test_without_a_checkpoint_a_shortened_table_still_verifies_but_says_so() -> None:
    verdict = verify(keyed(N)[:5])
    assert verdict.ok
    assert verdict.warning is not None
    assert "cannot be detected" in verdict.warning
    assert verify([]).ok  # an empty registry, and no checkpoint says otherwise


def test_a_chain_rewritten_with_the_key_differs_from_its_signed_checkpoint() -> None:
    honest = keyed(N)
    cp = checkpoint(honest, 6)
    # Someone holding the key edits row 6 and re-keys rows 6..8 correctly.
    rewritten = honest[:5]
    prev = rewritten[-1].hash
    for row in honest[5:]:
        entry = {**row.entry, "actor": "mallory"}
        digest = keyed_hash(KEY.mac_key, prev, entry)
        rewritten.append(dataclasses.replace(row, entry=entry, prev_hash=prev, hash=digest))
        prev = digest
    verdict = verify(rewritten, [cp])
    assert (verdict.ok, verdict.first_bad_seq, verdict.problem) == (False, 6, "checkpoint_mismatch")
    assert verdict.rows_checked == 5


def test_two_signed_heads_for_one_seq_mark_a_cut_back_chain() -> None:
    honest = keyed(N)
    # Rows 6..8 deleted, then the registry appended (and signed) new rows 6..8.
    regrown = [*honest[:5], *keyed(3, first=6, prev=honest[4].hash, actor="bob")]
    verdict = verify(regrown, [checkpoint(honest, 6), checkpoint(regrown, 6)])
    assert (verdict.first_bad_seq, verdict.problem) == (6, "checkpoint_mismatch")


def test_key_rotation_keeps_old_rows_verifiable() -> None:
    old = keyed(4, KEY)
    rows = [*old, *keyed(4, NEW_KEY, first=5, prev=old[-1].hash)]
    rotated = Keyring([NEW_KEY, KEY])  # new key active, the old one retired
    checkpoints = [checkpoint(rows, 4, KEY), checkpoint(rows, 8, NEW_KEY)]
    assert all(checkpoint_is_authentic(cp, rotated) for cp in checkpoints)
    assert verify(rows, checkpoints, rotated).ok
    # Dropping the retired key from the keyring makes its rows unverifiable, and says why.
    forgetful = verify(rows, [checkpoints[1]], Keyring([NEW_KEY]))
    assert (forgetful.first_bad_seq, forgetful.problem) == (1, "unknown_key")
    assert "retired key" in (forgetful.reason or "")


def test_legacy_rows_are_sealed_by_the_first_keyed_row() -> None:
    old = legacy(3)
    rows = [*old, *keyed(5, first=4, prev=old[-1].hash)]
    assert verify(rows, [checkpoint(rows, N)]).ok
    # Unkeyed rows can be recomputed without a key, but the seal no longer links to them.
    recomputed = [*rehash_unkeyed([*old[:1], edit(old[1], actor="x"), old[2]], 2), *rows[3:]]
    verdict = verify(recomputed, [checkpoint(rows, N)])
    assert (verdict.first_bad_seq, verdict.problem) == (4, "relinked")
    # And an unkeyed row is never accepted after keyed ones.
    late = [
        *rows,
        AuditRow(9, None, rows[-1].hash, legacy_hash(rows[-1].hash, content(9)), content(9)),
    ]
    assert (verify(late).first_bad_seq, verify(late).problem) == (9, "forged")


def test_checkpoints_are_authentic_only_as_signed() -> None:
    rows = keyed(N)
    cp = checkpoint(rows, N)
    assert checkpoint_is_authentic(cp, RING)
    for changed in (
        dataclasses.replace(cp, seq=N + 5),
        dataclasses.replace(cp, hash="0" * 64),
        dataclasses.replace(cp, chain="other"),
        dataclasses.replace(cp, signed_at=cp.signed_at + timedelta(seconds=1)),
        dataclasses.replace(cp, signature="00" * 64),
    ):
        assert not checkpoint_is_authentic(changed, RING)
    assert not checkpoint_is_authentic(cp, Keyring([NEW_KEY]))


def test_keyring_text_first_key_active_comments_and_separators() -> None:
    first, second = new_key_text(), new_key_text()
    ring = parse_keyring(f"# rotated 2026-03\n{first}  # active\n\n{second}\n", where="file")
    assert ring.active.key_id == parse_keyring(first, where="x").active.key_id
    assert len(ring.key_ids) == 2
    assert parse_keyring(f"{first},{second}", where="env").key_ids == ring.key_ids
    for bad, message in [
        ("", "holds no key"),
        ("rsa:abc", "does not start with"),
        ("ed25519:not base64!", "not valid base64"),
        ("ed25519:AAAA", "3 bytes, not 32"),
    ]:
        with pytest.raises(ValueError, match=message) as error:
            parse_keyring(bad, where="MLCP_AUDIT_KEY")
        assert "MLCP_AUDIT_KEY" in str(error.value)
        assert bad.partition(":")[2] not in str(error.value) or not bad


def test_the_row_hash_needs_the_key_and_covers_every_field() -> None:
    entry = content(1)
    digest = keyed_hash(KEY.mac_key, GENESIS, entry)
    assert digest != keyed_hash(NEW_KEY.mac_key, GENESIS, entry)
    assert digest != keyed_hash(KEY.mac_key, "1" * 64, entry)
    assert digest != legacy_hash(GENESIS, entry)
    for field in entry:
        assert digest != keyed_hash(KEY.mac_key, GENESIS, {**entry, field: "other"})


def test_canonical_json_ignores_key_order() -> None:
    assert canonical({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == canonical(
        {"a": [1, {"c": 3, "d": 2}], "b": 1}
    )
