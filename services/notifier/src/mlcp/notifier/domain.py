"""Pure decisions of the notifier: which events become alerts, how severe, where they go, how fast.

No Kafka, no SQL, no HTTP here. Rendering (the words and the channel payloads) is in
``render.py``; this module turns events into language-neutral ``Alert`` values, routes them,
rate-limits channels with a token bucket, decides single message vs digest, and classifies
webhook answers into what the delivery loop does next.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mlcp.contracts import (
    ApprovalRequested,
    CloudEvent,
    DriftDetected,
    GateFailed,
    ModelPromoted,
    ModelRolledBack,
    RunFailed,
)
from mlcp.contracts.common import Evidence
from mlcp.policy.platform import Channel, Notifications

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}

# The events the notifier turns into alerts.
ALERT_TYPES: tuple[str, ...] = (
    GateFailed.TYPE,
    DriftDetected.TYPE,
    ModelRolledBack.TYPE,
    RunFailed.TYPE,
    ApprovalRequested.TYPE,
    ModelPromoted.TYPE,
)

# Default rate of each channel kind (messages per minute): Slack documents about 1/s per
# incoming webhook, WeCom 20/min per group robot. A generic webhook has no documented limit.
DEFAULT_RATE_PER_MINUTE: dict[str, float] = {"slack": 60.0, "wecom": 20.0, "webhook": 600.0}


def short_name(event_type: str) -> str:
    """``mlcp.gate.failed.v1`` → ``gate.failed`` (the names routes are written with)."""
    name = event_type.removeprefix("mlcp.")
    return re.sub(r"\.v\d+$", "", name)


class EvidenceLine(BaseModel):
    """One measured comparison shown in an alert; ``flagged`` marks the one that caused it."""

    model_config = ConfigDict(frozen=True)

    metric: str
    observed: float | None
    operator: str
    threshold: float | None
    flagged: bool
    detail: str | None = None


class Alert(BaseModel):
    """A notification-worthy occurrence, independent of channel and language (stored as JSON).

    Its identity is the event id: a redelivered event is the same alert, while the same fact
    happening again later (a version promoted, rolled back and promoted again) is a new event
    and so a new alert. Producers emit each occurrence once through their outbox, in the
    transaction that records it (the registry: with its alias-history row), so the id is the
    occurrence.
    """

    model_config = ConfigDict(frozen=True)

    event_id: str
    kind: str
    """Short event name: gate.failed, drift.detected, model.rolled_back, run.failed …"""
    model: str
    version: str | None
    severity: Severity
    occurred_at: datetime
    correlation_id: str | None
    facts: dict[str, str]
    """Template values, e.g. stage, reason, alias, from_version, error."""
    evidence: tuple[EvidenceLine, ...] = ()


def _evidence(
    items: Iterable[Evidence], *, flagged_when_satisfied: bool
) -> tuple[EvidenceLine, ...]:
    lines = []
    for e in items:
        flagged = (e.satisfied is True) if flagged_when_satisfied else (e.satisfied is not True)
        lines.append(
            EvidenceLine(
                metric=e.metric,
                observed=e.observed,
                operator=e.operator,
                threshold=e.threshold,
                flagged=flagged,
                detail=e.detail,
            )
        )
    return tuple(lines)


def _drift_evidence(data: DriftDetected) -> tuple[EvidenceLine, ...]:
    # PSI drifts when the score exceeds its threshold; KS/chi2 p-values when below it.
    lines = [
        EvidenceLine(
            metric=f"{f.name} ({f.method})",
            observed=f.score,
            operator=">" if f.method == "psi" else "<",
            threshold=f.threshold,
            flagged=f.drifted,
        )
        for f in data.features
    ]
    return tuple(sorted(lines, key=lambda line: not line.flagged))


def alert_from_event(event: CloudEvent[Any]) -> Alert | None:
    """The alert an event raises, or None for types the notifier does not alert on."""
    data = event.data
    kind = short_name(event.type)
    base: dict[str, Any] = {
        "event_id": event.id,
        "kind": kind,
        "occurred_at": event.time,
        "correlation_id": event.correlationid,
    }
    if isinstance(data, GateFailed):
        return Alert(
            **base,
            model=data.model,
            version=data.version,
            severity="warning",
            facts={"stage": data.stage, "check": data.kind, "reason": data.reason},
            evidence=_evidence(data.evidence, flagged_when_satisfied=False),
        )
    if isinstance(data, DriftDetected):
        drifted = sum(1 for f in data.features if f.drifted)
        facts = {
            "share": f"{data.share_drifted:.0%}",
            "drifted": str(drifted),
            "tests": str(len(data.features)),
            "window": str(data.window.size),
        }
        if data.alias:
            facts["alias"] = data.alias
        return Alert(
            **base,
            model=data.model,
            version=data.version,
            severity="warning",
            facts=facts,
            evidence=_drift_evidence(data),
        )
    if isinstance(data, ModelRolledBack):
        facts = {
            "alias": data.alias,
            "from_version": data.from_version,
            "to_version": data.to_version or "—",
            "cause": data.cause,
        }
        if data.reason:
            facts["reason"] = data.reason
        if data.actor:
            facts["actor"] = data.actor
        return Alert(
            **base,
            model=data.model,
            version=data.from_version,
            severity="critical" if data.cause == "degraded" else "warning",
            facts=facts,
        )
    if isinstance(data, RunFailed):
        facts = {"run_id": data.run_id, "stage": data.stage, "reason": data.reason}
        facts["error"] = f"{data.error_type}: {data.error}" if data.error_type else data.error
        return Alert(
            **base,
            model=data.model,
            version=None,
            severity="warning",
            facts=facts,
        )
    if isinstance(data, ApprovalRequested):
        facts = {"stage": data.stage}
        if data.expires_at is not None:
            facts["expires_at"] = data.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        return Alert(
            **base,
            model=data.model,
            version=data.version,
            severity="info",
            facts=facts,
        )
    if isinstance(data, ModelPromoted):
        facts = {
            "alias": data.alias,
            "traffic": f"{data.traffic_percent:g}",
            "cause": data.cause,
            "previous_version": data.previous_version or "—",
        }
        if data.actor:
            facts["actor"] = data.actor
        return Alert(
            **base,
            model=data.model,
            version=data.version,
            severity="info",
            facts=facts,
        )
    return None


# --- routing -------------------------------------------------------------------------------------

ALERT_NAMES: tuple[str, ...] = tuple(short_name(t) for t in ALERT_TYPES)


def route_errors(notifications: Notifications) -> list[str]:
    """Route event names that can never match (a typo would silently mute an alert)."""
    return [
        f"notifications.routes[{i}].events: unknown event {name!r} "
        f"(the notifier alerts on {', '.join(ALERT_NAMES)} or '*')"
        for i, r in enumerate(notifications.routes)
        for name in r.events
        if name != "*" and name not in ALERT_NAMES
    ]


def usable_only(notifications: Notifications, usable: Iterable[str]) -> Notifications:
    """``notifications`` without the channels not in ``usable``: they leave every route, and a
    route left without a channel goes (its alerts are recorded, not sent)."""
    keep = set(usable)
    routes = [
        r.model_copy(update={"channels": [c for c in r.channels if c in keep]})
        for r in notifications.routes
    ]
    return Notifications(
        channels={n: c for n, c in notifications.channels.items() if n in keep},
        routes=[r for r in routes if r.channels],
    )


def no_usable_channel(notifications: Notifications, usable: Iterable[str]) -> str | None:
    """Why the notifier cannot start — its routes need a channel and none is usable — or None.

    Some channels unset is a deployment that has only the others; all of them unset while
    routes send alerts somewhere would record every alert and send none."""
    if not notifications.routes or set(usable) & set(notifications.channels):
        return None
    variables = sorted({c.url_env for c in notifications.channels.values()})
    return (
        "notifications: no channel is usable (the routes need one): set "
        + " or ".join(variables)
        + " to the channel's webhook URL"
    )


def route(notifications: Notifications, alert: Alert) -> list[str]:
    """The channels an alert goes to: every route matching its event, model and severity.

    A route's ``events`` may contain ``*`` (every alert). Order follows the configuration;
    a channel named by several matching routes receives the alert once.
    """
    channels: list[str] = []
    for r in notifications.routes:
        if alert.kind not in r.events and "*" not in r.events:
            continue
        if r.models is not None and alert.model not in r.models:
            continue
        if SEVERITY_RANK[alert.severity] < SEVERITY_RANK[r.min_severity]:
            continue
        channels.extend(c for c in r.channels if c not in channels)
    return channels


def rate_per_minute(channel: Channel) -> float:
    """The channel's configured rate, else its kind's default."""
    return channel.rate_per_minute or DEFAULT_RATE_PER_MINUTE[channel.kind]


# --- rate limits ---------------------------------------------------------------------------------


class TokenBucket:
    """A token bucket on an explicit clock (seconds): ``rate`` tokens per second up to ``capacity``.

    With capacity 1 it is a minimum spacing of 1/rate between messages, which keeps WeCom's
    "20 per minute" true over any 60 s window, not only on average.
    """

    def __init__(self, rate_per_s: float, capacity: float, *, now: float) -> None:
        if rate_per_s <= 0 or capacity < 1:
            raise ValueError("rate must be positive and capacity at least 1")
        self.rate = rate_per_s
        self.capacity = capacity
        self._tokens = capacity
        self._updated = now
        self._paused_until = -math.inf

    @classmethod
    def per_minute(cls, per_minute: float, *, now: float) -> TokenBucket:
        """A bucket allowing ``per_minute`` messages a minute, bursting at most a second's worth."""
        rate = per_minute / 60.0
        return cls(rate, max(1.0, math.floor(rate)), now=now)

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (zero while paused by a Retry-After)."""
        self._refill(now)
        return 0.0 if now < self._paused_until else self._tokens

    def wait_s(self, now: float) -> float:
        """Seconds until one token is available."""
        self._refill(now)
        refill = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
        return max(refill, self._paused_until - now, 0.0)

    def take(self, now: float) -> None:
        """Spend one token (the caller waited ``wait_s`` first)."""
        self._refill(now)
        self._tokens -= 1

    def pause_until(self, until: float) -> None:
        """Send nothing before ``until`` (a 429's Retry-After, WeCom's 45009) and start empty."""
        self._paused_until = max(self._paused_until, until)
        self._tokens = min(self._tokens, 0.0)
        self._updated = max(self._updated, until)


Plan = Literal["single", "digest"]


def plan_send(pending: int, tokens: float) -> Plan:
    """One message per alert while the bucket covers them all; else one digest for the backlog."""
    if pending <= 1 or pending <= math.floor(tokens):
        return "single"
    return "digest"


# --- webhook answers ---------------------------------------------------------------------------

Verdict = Literal["delivered", "retry", "rate_limited", "failed", "disable_channel", "uncertain"]
"""``retry``: certainly not received (refused connection, 5xx …); ``uncertain``: the request was
written but no answer came, so the channel may have shown it (sent again marked as a repeat)."""

WECOM_RATE_LIMITED = 45009
WECOM_INVALID_WEBHOOK = 93000


@dataclass(frozen=True)
class Outcome:
    """What the delivery loop does with a message after the channel answered."""

    verdict: Verdict
    detail: str
    retry_after_s: float | None = None


def _retry_after(headers: Mapping[str, str], default: float) -> float:
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default  # an HTTP date: rare for webhooks; the default spacing is safe


def classify_response(
    kind: str, status: int, headers: Mapping[str, str], body: str, *, rate_per_minute: float
) -> Outcome:
    """Turn a channel's HTTP answer into delivered / retry / rate_limited / failed / disable."""
    spacing = 60.0 / rate_per_minute
    if status == 429:
        return Outcome("rate_limited", "HTTP 429", _retry_after(headers, max(1.0, spacing)))
    if status >= 500 or status == 408:
        return Outcome("retry", f"HTTP {status}")
    if 400 <= status < 500:
        return Outcome("failed", f"HTTP {status}: {body[:200]}")
    if kind != "wecom":
        return Outcome("delivered", f"HTTP {status}")
    # WeCom answers HTTP 200 and puts the result in errcode.
    try:
        answer = json.loads(body)
        errcode = int(answer.get("errcode", -1))
        errmsg = str(answer.get("errmsg", ""))[:200]
    except (ValueError, TypeError, AttributeError):
        return Outcome("retry", f"WeCom answered HTTP {status} without JSON")
    if errcode == 0:
        return Outcome("delivered", "errcode 0")
    if errcode == WECOM_RATE_LIMITED:
        # The robot's quota is per minute: wait for a slot to free up rather than hammering.
        return Outcome("rate_limited", f"errcode {errcode}: {errmsg}", max(spacing, 1.0))
    if errcode == WECOM_INVALID_WEBHOOK:
        return Outcome("disable_channel", f"errcode {errcode}: {errmsg}")
    return Outcome("failed", f"errcode {errcode}: {errmsg}")


# --- secrets -------------------------------------------------------------------------------------

REDACTED = "[redacted]"
# Webhook-looking URLs that must never be shown even when not known (e.g. inside an error text).
_SECRET_PATTERNS = (
    re.compile(r"https?://hooks\.slack\.com/\S+"),
    re.compile(r"([?&]key=)[^&\s\"']+"),
)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Remove webhook URLs, their keys and signing secrets from ``text``."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _SECRET_PATTERNS[0].sub(REDACTED, text)
    return _SECRET_PATTERNS[1].sub(lambda m: m.group(1) + REDACTED, text)


def secret_parts(url: str) -> list[str]:
    """The URL and the parts of it that are credentials on their own (query values, path tail)."""
    parts = [url]
    parts += [m.group(0).split("=", 1)[1] for m in re.finditer(r"[?&][^=&]+=[^&]+", url)]
    tail = url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    if len(tail) >= 8:  # a Slack path token; short tails ("send") are not secrets
        parts.append(tail)
    return [p for p in parts if len(p) >= 6]


def fingerprint(url: str) -> str:
    """A short non-reversible name of a URL: tells whether a disabled channel's URL changed."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]
