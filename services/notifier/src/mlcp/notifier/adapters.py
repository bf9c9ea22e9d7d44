"""HTTP adapters: post a rendered payload to Slack, a WeCom group robot or a signed JSON webhook.

One shared ``httpx.AsyncClient`` with explicit timeouts. A send never raises for a channel
problem: it returns the ``Outcome`` the delivery loop acts on, with every detail redacted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from mlcp.contracts.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from mlcp.notifier.domain import (
    Outcome,
    classify_response,
    rate_per_minute,
    redact,
    secret_parts,
)
from mlcp.policy.platform import Notifications
from mlcp.runtime.settings import ConfigurationError

# Transport failures that happen before the whole request reached the provider (no connection,
# no pooled slot, the body not fully written): it cannot have acted on it, a plain retry is
# safe. Every other failure (no answer in time after the request was written, the connection
# dropped while waiting for the answer) leaves the outcome unknown.
NOT_SENT_ERRORS: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.LocalProtocolError,
    httpx.UnsupportedProtocol,
    httpx.ProxyError,
)


@dataclass(frozen=True)
class Target:
    """A configured channel with its secrets resolved from the environment."""

    name: str
    kind: str
    url: str = field(repr=False)
    secret: str | None = field(default=None, repr=False)
    language: str = "en"
    rate_per_minute: float = 60.0
    msgtype: str = "markdown"
    """wecom: markdown or text."""

    def secrets(self) -> list[str]:
        """Every string that must never be shown (URL, its key, the signing key)."""
        return secret_parts(self.url) + ([self.secret] if self.secret else [])


@dataclass(frozen=True)
class ResolvedChannels:
    """The channels of the configuration, split by whether their URL variable is set."""

    targets: dict[str, Target]
    """The usable channels, with their URLs."""
    unset: dict[str, str]
    """Channel → the variable naming its URL, which is not set: the channel is disabled."""


def resolve_targets(
    notifications: Notifications, environ: dict[str, str] | None = None
) -> ResolvedChannels:
    """Channels with their URLs read from the variables they name.

    A channel whose URL variable is unset (or blank) is disabled, not an error: a deployment
    may set only the channels it has. One whose variables are set but wrong (not an http(s)
    URL, a webhook without its signing key) is a mistake: ConfigurationError.
    """
    env = dict(os.environ) if environ is None else environ
    targets: dict[str, Target] = {}
    unset: dict[str, str] = {}
    for name, channel in notifications.channels.items():
        where = f"notifications.channels.{name}"
        url = env.get(channel.url_env, "").strip()
        if not url:
            unset[name] = channel.url_env
            continue
        if not url.startswith(("https://", "http://")):
            raise ConfigurationError(f"{where}.url_env: {channel.url_env} is not an http(s) URL")
        secret = None
        if channel.kind == "webhook":
            if not channel.secret_env:
                raise ConfigurationError(
                    f"{where}.secret_env: a webhook channel needs its HMAC signing key variable"
                )
            secret = env.get(channel.secret_env, "")
            if not secret:
                raise ConfigurationError(
                    f"{where}.secret_env: the variable {channel.secret_env} is not set"
                )
        targets[name] = Target(
            name=name,
            kind=channel.kind,
            url=url,
            secret=secret,
            language=channel.language,
            rate_per_minute=rate_per_minute(channel),
            msgtype=channel.msgtype or "markdown",
        )
    return ResolvedChannels(targets, unset)


class RedactingFilter(logging.Filter):
    """Rewrites log records so that no webhook URL, key or signing secret reaches a handler."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_redaction(secrets: list[str], loggers: tuple[str, ...]) -> RedactingFilter:
    """Attach one redacting filter to ``loggers`` (httpx logs every request URL at INFO)."""
    flt = RedactingFilter(secrets)
    for name in loggers:
        logger = logging.getLogger(name)
        # Building twice in one process (tests) extends the existing filter instead of stacking.
        existing = [f for f in logger.filters if isinstance(f, RedactingFilter)]
        if existing:
            existing[0].secrets = sorted({*existing[0].secrets, *secrets})
        else:
            logger.addFilter(flt)
    # httpx's request line carries the full webhook URL: never log it, even redacted.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    return flt


class Sender:
    """Posts JSON payloads to targets over one pooled client."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(self, target: Target, payload: dict[str, Any]) -> Outcome:
        """POST ``payload``; never raises for a channel problem, details are redacted.

        A failure after the request was written (read timeout, connection dropped before the
        answer) is ``uncertain``: the provider may have shown the message."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {"content-type": "application/json; charset=utf-8"}
        if target.kind == "webhook" and target.secret:
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(target.secret, timestamp, body)
        try:
            response = await self._client.post(target.url, content=body, headers=headers)
        except NOT_SENT_ERRORS as exc:
            return Outcome("retry", _failure(exc, target))
        except httpx.HTTPError as exc:
            return Outcome("uncertain", _failure(exc, target))
        outcome = classify_response(
            target.kind,
            response.status_code,
            response.headers,
            response.text,
            rate_per_minute=target.rate_per_minute,
        )
        detail = redact(outcome.detail, target.secrets())
        return Outcome(outcome.verdict, detail, outcome.retry_after_s)


def _failure(exc: httpx.HTTPError, target: Target) -> str:
    """A transport failure in words, without the URL or its secrets."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout ({type(exc).__name__})"
    return redact(f"{type(exc).__name__}: {exc}", target.secrets())
