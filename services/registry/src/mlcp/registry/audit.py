"""The audit trail at work: appending keyed rows with their signed checkpoints, sealing rows
written before the chain was keyed, reading checkpoints back from Kafka, verifying the table.

The rules themselves (hashes, signatures, what a broken chain means) are in ``chain.py``; this
module only moves rows and records between PostgreSQL, Kafka and those rules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from mlcp.contracts import AuditCheckpointed, ContractError, decode_event
from mlcp.registry.chain import (
    ChainVerifier,
    Checkpoint,
    Verdict,
    checkpoint_is_authentic,
    sign_checkpoint,
)
from mlcp.registry.domain import AuditEntry
from mlcp.registry.keys import Keyring
from mlcp.registry.store import audit_log
from mlcp.runtime import ServiceRuntime, Settings, Tx
from mlcp.runtime.db import Conn
from mlcp.runtime.kafka import make_admin, make_consumer

log = logging.getLogger(__name__)

REGISTRY_ACTOR = "mlcp/registry"
CHECKPOINT_WINDOW = 1000
"""Checkpoint records read per step, backwards from the end of the topic."""


class AuditTrail:
    """Appends governance actions to the keyed chain, each with its signed checkpoint."""

    def __init__(self, keyring: Keyring, chain_name: str) -> None:
        self.keyring = keyring
        self.chain_name = chain_name

    async def append(
        self,
        tx: Tx,
        *,
        actor: str,
        action: str,
        at: datetime,
        model: str | None = None,
        version: str | None = None,
        before: Any = None,
        after: Any = None,
        cause_event_id: str | None = None,
        correlationid: str | None = None,
    ) -> int:
        """Append a row in ``tx`` and emit the chain's new signed head through the outbox (so
        the checkpoint is published if, and only if, the row commits); returns its seq. The
        checkpoint carries ``correlationid`` (default: the transaction's)."""
        key = self.keyring.active
        seq, digest = await audit_log.append_audit(
            tx.conn,
            key,
            actor=actor,
            action=action,
            at=at,
            model=model,
            version=version,
            before=before,
            after=after,
            cause_event_id=cause_event_id,
        )
        checkpoint = sign_checkpoint(key, self.chain_name, seq, digest, datetime.now(UTC))
        await tx.emit(
            AuditCheckpointed(
                chain=checkpoint.chain,
                seq=checkpoint.seq,
                hash=checkpoint.hash,
                key_id=checkpoint.key_id,
                signed_at=checkpoint.signed_at,
                signature=checkpoint.signature,
            ),
            correlationid=correlationid,
        )
        return seq

    async def record(self, tx: Tx, entry: AuditEntry, *, correlationid: str | None = None) -> int:
        """``append`` a decided entry (``transitions``); its seq."""
        return await self.append(
            tx,
            actor=entry.actor,
            action=entry.action,
            at=entry.at,
            model=entry.model,
            version=entry.version,
            before=entry.before,
            after=entry.after,
            cause_event_id=entry.cause_event_id,
            correlationid=correlationid,
        )

    async def seal_legacy_rows(self, runtime: ServiceRuntime) -> None:
        """Rows written before the chain was keyed are sealed by the first keyed row after them:
        at the first start with a key, append one (``chain_anchored``) right away, saying
        whether the old unkeyed chain held when it was sealed."""
        async with runtime.transaction() as tx:
            await audit_log.lock_audit(tx.conn)
            legacy = await audit_log.unanchored_legacy_rows(tx.conn)
            if not legacy:
                return
            verdict = await verify_chain(tx.conn, self.keyring, ())
            if not verdict.ok:
                log.error("the unkeyed audit rows do not hold before sealing: %s", verdict.reason)
            await self.append(
                tx,
                actor=REGISTRY_ACTOR,
                action="chain_anchored",
                at=datetime.now(UTC),
                after={
                    "legacy_rows": legacy,
                    "legacy_chain_ok": verdict.ok,
                    "legacy_first_bad_seq": verdict.first_bad_seq,
                    "key_id": self.keyring.active.key_id,
                },
            )
        log.warning("sealed %d audit rows written before the chain was keyed", legacy)

    async def seal_forever(self, runtime: ServiceRuntime) -> None:
        """``seal_legacy_rows`` as a start-up task: retried while the database is away."""
        delay = 1.0
        while True:
            try:
                await self.seal_legacy_rows(runtime)
                return
            except Exception as exc:
                log.warning("sealing legacy audit rows: %s; retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)


async def verify_chain(
    conn: Conn,
    keyring: Keyring,
    checkpoints: Sequence[Checkpoint],
    *,
    warning: str | None = None,
) -> Verdict:
    """Stream the table through the verifier (one consistent snapshot, bounded memory)."""
    verifier = ChainVerifier(keyring.mac_key, checkpoints, checkpoint_warning=warning)

    async def walk() -> None:
        async for row in audit_log.audit_chain(conn):
            if not verifier.feed((row,)):
                return

    if conn.is_in_transaction():
        await walk()
    else:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await walk()
    return verifier.finish()


async def read_checkpoints(
    settings: Settings,
    chain_name: str,
    keyring: Keyring,
    *,
    window: int = CHECKPOINT_WINDOW,
    timeout_s: float = 20.0,
) -> tuple[list[Checkpoint], str | None]:
    """The newest authentic checkpoints of ``chain_name`` on Kafka, and a warning (or None).

    Reads the checkpoint topic backwards, ``window`` records at a time, until a window holds a
    checkpoint of this chain signed by a key of ``keyring`` (records of other chains, or that
    do not verify, are skipped). No consumer group; memory stays bounded by the window.
    """
    topic = settings.topic(AuditCheckpointed.TYPE)
    try:
        partitions = await asyncio.wait_for(_partitions(settings, topic), timeout_s)
        if not partitions:
            return [], f"{topic} does not exist: no checkpoint was ever published"
        consumer = make_consumer(settings, group_id=None, enable_auto_commit=False)
        try:
            await asyncio.wait_for(consumer.start(), timeout_s)
            found, rejected = await asyncio.wait_for(
                _newest_window(consumer, partitions, chain_name, keyring, window), timeout_s
            )
        finally:
            await consumer.stop()
    except (KafkaError, OSError, TimeoutError) as exc:
        return [], (
            f"the signed checkpoints could not be read from Kafka ({type(exc).__name__}: {exc}); "
            "rows deleted at the end of the table (or all of them) cannot be detected"
        )
    warning = None
    if rejected:
        warning = f"{rejected} checkpoint record(s) on {topic} were not signed by a known key"
    return found, warning


async def _partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    # Asked only once the topic is known to exist: a metadata request for a missing topic may
    # create it, with the broker's default retention.
    admin = make_admin(settings)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return []
        (described,) = await admin.describe_topics([topic])
        return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    finally:
        await admin.close()


async def _newest_window(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    chain_name: str,
    keyring: Keyring,
    window: int,
) -> tuple[list[Checkpoint], int]:
    consumer.assign(partitions)
    begin = await consumer.beginning_offsets(partitions)
    end = await consumer.end_offsets(partitions)
    found: list[Checkpoint] = []
    rejected = 0
    for tp in partitions:
        high = end[tp]
        while high > begin[tp]:
            low = max(begin[tp], high - window)
            consumer.seek(tp, low)
            records = []
            while await consumer.position(tp) < high:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=500)
                records += [r for r in batch.get(tp, []) if r.offset < high]
            chain_checkpoints = [c for c in map(_checkpoint, records) if c is not None]
            chain_checkpoints = [c for c in chain_checkpoints if c.chain == chain_name]
            authentic = [c for c in chain_checkpoints if checkpoint_is_authentic(c, keyring)]
            rejected += len(chain_checkpoints) - len(authentic)
            if authentic:
                found += authentic
                break
            high = low
    return found, rejected


def _checkpoint(record: Any) -> Checkpoint | None:
    try:
        data = decode_event(record.value, expected_type=AuditCheckpointed.TYPE).data
    except ContractError:
        return None
    return Checkpoint(data.chain, data.seq, data.hash, data.key_id, data.signed_at, data.signature)
