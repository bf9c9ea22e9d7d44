"""The delivery loop: sends pending deliveries from PostgreSQL, one task per channel.

Handlers only record alerts (inside the inbox transaction), so a slow or rate-limited webhook
never holds up the Kafka consumer. Each channel's task waits for a token of its bucket, then
sends either the oldest pending alert alone or — when more are waiting than the bucket can pay
for — one digest standing for all of them. Answers decide what happens to the rows: delivered,
back in the queue after Retry-After / backoff, failed (a dead letter kept in the table), or the
whole channel disabled (WeCom 93000).

No alert is lost: when the notifier cannot know whether the channel received a message — its
process died between claiming the rows and recording the answer, or the request was written and
no answer came in time — the rows are sent again, once per such uncertainty, tagged
"↻ possibly repeated" with the earlier message's ref, and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mlcp.notifier import store
from mlcp.notifier.adapters import Sender, Target
from mlcp.notifier.domain import (
    Outcome,
    TokenBucket,
    fingerprint,
    plan_send,
    redact,
)
from mlcp.notifier.render import Language, digest_payload, single_payload
from mlcp.runtime.backoff import backoff_s
from mlcp.runtime.db import TRANSIENT_DB_ERRORS
from mlcp.runtime.faults import crash_point
from mlcp.runtime.loops import run_every

log = logging.getLogger(__name__)

# Crash points (``MLCP_CRASH_AT``) for the kill -9 tests: rows claimed as 'sending', nothing
# posted yet; and the channel's answer received, not yet recorded.
AFTER_CLAIM = "notifier.after_claim"
AFTER_SEND = "notifier.after_send"


@dataclass(frozen=True)
class DeliveryOptions:
    """Knobs of the delivery loop (environment ``MLCP_NOTIFIER_*``, see app.py)."""

    registry_url: str = "http://127.0.0.1:8081"
    http_timeout_s: float = 10.0
    max_attempts: int = 8
    retry_initial_s: float = 1.0
    retry_max_s: float = 300.0
    poll_interval_s: float = 1.0
    digest_max_alerts: int = 500

    @property
    def lease_s(self) -> float:
        """After this long in 'sending' a delivery's process is certainly gone."""
        return 2 * self.http_timeout_s + 5.0


class DeliveryMetrics:
    """``mlcp_notifier_*`` delivery metrics; labelled by channel name, never by URL."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "mlcp_notifier"
        self.deliveries = Counter(
            f"{p}_deliveries_total",
            "Deliveries (event × channel) by outcome: delivered, retried, rate_limited, failed, "
            "uncertain (the channel may have received it; sent again marked as a repeat).",
            ["channel", "outcome"],
            registry=registry,
        )
        self.possible_repeats = Counter(
            f"{p}_possible_repeats_total",
            "Deliveries accepted by a channel in a message tagged '↻ possibly repeated' (an "
            "earlier message may have carried them).",
            ["channel"],
            registry=registry,
        )
        self.messages = Counter(
            f"{p}_messages_total",
            "Messages accepted by a channel, by shape (single, digest).",
            ["channel", "shape"],
            registry=registry,
        )
        self.disabled = Gauge(
            f"{p}_channel_disabled",
            "1 while a channel is disabled because its provider called the webhook invalid.",
            ["channel"],
            registry=registry,
        )
        self.pending = Gauge(
            f"{p}_pending_deliveries",
            "Deliveries not yet delivered or failed, per channel.",
            ["channel"],
            registry=registry,
        )
        self.delay = Histogram(
            f"{p}_delivery_delay_seconds",
            "Time from an event to its delivery, per channel.",
            ["channel"],
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
        )


class DeliveryLoop:
    """Sends what the handlers recorded, within each channel's rate limit."""

    def __init__(
        self,
        *,
        pool: Callable[[], asyncpg.Pool],
        targets: dict[str, Target],
        sender: Sender,
        options: DeliveryOptions,
        metrics: DeliveryMetrics,
        schema: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._targets = targets
        self._sender = sender
        self._options = options
        self._metrics = metrics
        self._clock = clock
        self._wake = {name: asyncio.Event() for name in targets}
        self._stopping = asyncio.Event()
        self.disabled: dict[str, str] = {}
        for name in targets:
            metrics.disabled.labels(name).set(0)

    def wake(self, *_: Any) -> None:
        """Something was recorded: every channel looks at its queue now."""
        for event in self._wake.values():
            event.set()

    def stop(self) -> None:
        """Finish the messages in flight, claim nothing more; ``run`` then returns."""
        self._stopping.set()
        self.wake()

    async def run(self) -> None:
        """Run until ``stop``: one sender task per channel, a listener and a housekeeper."""
        if not self._targets:
            return
        await self._load_disabled()
        senders = [
            asyncio.create_task(self._channel(t), name=f"notify-{t.name}")
            for t in self._targets.values()
        ]
        helpers = [
            asyncio.create_task(self._listen(), name="notify-listen"),
            asyncio.create_task(self._housekeeping(), name="notify-housekeeping"),
        ]
        try:
            await asyncio.gather(*senders)
        finally:
            for task in senders + helpers:
                task.cancel()
            for task in senders + helpers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # -- background chores ------------------------------------------------------------------
    async def _load_disabled(self) -> None:
        while True:
            try:
                async with self._pool().acquire() as conn:
                    known = await store.disabled_channels(conn)
                break
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("database not reachable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
        for name, target in self._targets.items():
            # A new URL re-enables the channel: someone fixed the robot.
            if known.get(name) == fingerprint(target.url):
                self._disable_in_memory(name, "disabled earlier: the provider called it invalid")

    async def _listen(self) -> None:
        while True:
            try:
                async with self._pool().acquire() as conn:
                    await conn.add_listener(store.wake_channel(self._schema), self.wake)
                    try:
                        while not conn.is_closed():
                            await asyncio.sleep(5.0)
                    finally:
                        with contextlib.suppress(Exception):
                            await conn.remove_listener(store.wake_channel(self._schema), self.wake)
            except TRANSIENT_DB_ERRORS:
                await asyncio.sleep(1.0)

    async def _housekeeping(self) -> None:
        await run_every(
            "housekeeping",
            max(1.0, self._options.lease_s / 4),
            self._housekeeping_round,
            errors=TRANSIENT_DB_ERRORS,
            max_backoff_s=max(1.0, self._options.lease_s / 4),
            logger=log,
        )

    async def _housekeeping_round(self) -> None:
        channels = list(self._targets)
        async with self._pool().acquire() as conn:
            orphans = await store.requeue_orphans(
                conn, channels, self._options.lease_s, self._options.max_attempts
            )
            pending = await store.pending_counts(conn)
        for channel, (requeued, failed) in orphans.items():
            log.error(
                "%s: %d deliveries were being sent when a notifier process stopped; the "
                "channel may or may not have received them: %d will be sent again marked "
                "'possibly repeated', %d were out of attempts and failed",
                channel,
                requeued + failed,
                requeued,
                failed,
            )
            self._metrics.deliveries.labels(channel, "uncertain").inc(requeued)
            self._metrics.deliveries.labels(channel, "failed").inc(failed)
        if orphans:
            self.wake()
        for name in channels:
            self._metrics.pending.labels(name).set(pending.get(name, 0))

    # -- one channel ------------------------------------------------------------------------
    async def _wait(self, name: str) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake[name].wait(), self._options.poll_interval_s)

    async def _channel(self, target: Target) -> None:
        bucket = TokenBucket.per_minute(target.rate_per_minute, now=self._clock())
        while not self._stopping.is_set():
            try:
                await self._step(target, bucket)
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("%s: database not reachable (%s)", target.name, type(exc).__name__)
                await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: delivery step failed; retrying", target.name)
                await asyncio.sleep(1.0)

    async def _step(self, target: Target, bucket: TokenBucket) -> None:
        name = target.name
        if name in self.disabled:
            async with self._pool().acquire() as conn:
                failed = await store.fail_channel(conn, name, self.disabled[name])
            if failed:
                self._metrics.deliveries.labels(name, "failed").inc(failed)
                log.error("channel %s is disabled: %d alerts recorded as failed", name, failed)
            await self._wait(name)
            return
        wait = bucket.wait_s(self._clock())
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)
        if self._stopping.is_set():
            return
        self._wake[name].clear()
        limit = self._options.digest_max_alerts
        async with self._pool().acquire() as conn:
            due = await store.count_due(conn, name, limit)
            if due == 0:
                claimed = None
            else:
                plan = plan_send(due, bucket.tokens(self._clock()))
                claimed = await store.claim(conn, name, 1 if plan == "single" else limit)
        if claimed is None:
            await self._wait(name)
            return
        crash_point(AFTER_CLAIM)
        bucket.take(self._clock())
        digest = len(claimed.alerts) > 1
        ref = str(claimed.message_id)
        language: Language = "zh" if target.language == "zh" else "en"
        url = self._options.registry_url
        try:
            payload: dict[str, Any]
            if digest:
                payload = digest_payload(
                    target.kind,
                    claimed.alerts,
                    language,
                    url,
                    ref,
                    msgtype=target.msgtype,
                    repeats=claimed.uncertain_refs,
                )
            else:
                alert = claimed.alerts[0]
                payload = single_payload(
                    target.kind,
                    alert,
                    language,
                    url,
                    ref,
                    msgtype=target.msgtype,
                    repeat_of=claimed.uncertain_refs.get(alert.event_id, ()),
                )
            outcome = await self._sender.send(target, payload)
            crash_point(AFTER_SEND)
        except Exception as exc:
            # A bug must not leave claimed rows hanging: they fail with the reason, visibly.
            log.exception("%s: message %s could not be rendered or sent", name, ref)
            detail = redact(f"{type(exc).__name__}: {exc}", target.secrets())
            outcome = Outcome("failed", f"internal error: {detail}")
        # Recording the answer must survive a database blip (until the lease ends, after which
        # the rows are sent again as possible repeats anyway).
        deadline = self._clock() + self._options.lease_s / 2
        while True:
            try:
                await self._settle(target, claimed, outcome, bucket, digest=digest)
                return
            except TRANSIENT_DB_ERRORS as exc:
                if self._clock() > deadline:
                    raise
                log.warning("%s: cannot record message %s yet (%s)", name, ref, type(exc).__name__)
                await asyncio.sleep(0.5)

    async def _settle(
        self,
        target: Target,
        claimed: store.Claimed,
        outcome: Outcome,
        bucket: TokenBucket,
        *,
        digest: bool,
    ) -> None:
        name, mid, n = target.name, claimed.message_id, len(claimed.alerts)
        opts = self._options
        async with self._pool().acquire() as conn:
            if outcome.verdict == "delivered":
                done = await store.mark_delivered(conn, mid, digest=digest)
                self._metrics.messages.labels(name, "digest" if digest else "single").inc()
                self._metrics.deliveries.labels(name, "delivered").inc(len(done.delays_s))
                self._metrics.possible_repeats.labels(name).inc(done.repeats)
                for delay in done.delays_s:
                    self._metrics.delay.labels(name).observe(max(0.0, delay))
                earlier = sorted({r for refs in claimed.uncertain_refs.values() for r in refs})
                log.info(
                    "%s: delivered message %s (%d alerts, %d possibly repeated from %s)",
                    name,
                    mid,
                    n,
                    done.repeats,
                    ", ".join(earlier) or "no earlier message",
                )
            elif outcome.verdict == "rate_limited":
                after = outcome.retry_after_s or 1.0
                bucket.pause_until(self._clock() + after)
                await store.mark_retry(
                    conn,
                    mid,
                    delay_s=after,
                    error=outcome.detail,
                    max_attempts=opts.max_attempts,
                    counts=False,
                )
                self._metrics.deliveries.labels(name, "rate_limited").inc(n)
                log.warning("%s: rate limited (%s); retrying in %.1fs", name, outcome.detail, after)
            elif outcome.verdict in ("retry", "uncertain"):
                uncertain = outcome.verdict == "uncertain"
                delay = backoff_s(
                    claimed.attempts, initial_s=opts.retry_initial_s, maximum_s=opts.retry_max_s
                )
                retried, failed = await store.mark_retry(
                    conn,
                    mid,
                    delay_s=delay,
                    error=outcome.detail,
                    max_attempts=opts.max_attempts,
                    counts=True,
                    uncertain=uncertain,
                )
                self._metrics.deliveries.labels(name, "uncertain" if uncertain else "retried").inc(
                    retried
                )
                self._metrics.deliveries.labels(name, "failed").inc(failed)
                log.warning(
                    "%s: message %s %s (%s); %d retried in %.1fs%s, %d out of attempts",
                    name,
                    mid,
                    "may or may not have been received" if uncertain else "not delivered",
                    outcome.detail,
                    retried,
                    delay,
                    " marked 'possibly repeated'" if uncertain else "",
                    failed,
                )
            elif outcome.verdict == "failed":
                failed = await store.mark_failed(conn, mid, outcome.detail)
                self._metrics.deliveries.labels(name, "failed").inc(failed)
                log.error(
                    "%s: message %s refused permanently (%s); %d alerts kept as failed",
                    name,
                    mid,
                    outcome.detail,
                    failed,
                )
            else:
                reason = f"channel disabled: {outcome.detail}"
                await store.disable_channel(conn, name, fingerprint(target.url), reason)
                failed = await store.fail_channel(conn, name, reason)
                self._metrics.deliveries.labels(name, "failed").inc(failed)
                self._disable_in_memory(name, reason)

    def _disable_in_memory(self, name: str, reason: str) -> None:
        self.disabled[name] = reason
        self._metrics.disabled.labels(name).set(1)
        log.critical(
            "CHANNEL %s DISABLED: %s. Its alerts are recorded as failed until the webhook URL "
            "is replaced and the notifier restarted.",
            name,
            reason,
        )
