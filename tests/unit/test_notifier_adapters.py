"""The HTTP adapters against a real local HTTP server (the recording sink on 127.0.0.1):
Slack 429 + Retry-After, WeCom 45009 / 93000, 500, timeouts, HMAC-signed webhooks, and webhook
secrets never shown in outcomes or logs. Also: channel secrets are checked at start."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mlcp.contracts.webhook import SIGNATURE_HEADER
from mlcp.examples.webhook_sink import Sink, serve
from mlcp.notifier.adapters import (
    Sender,
    Target,
    install_redaction,
    resolve_targets,
)
from mlcp.runtime.settings import ConfigurationError
from tests.conftest import free_port, wait_for
from tests.unit.test_notifier_domain import notifications

pytestmark = pytest.mark.unit

SECRET_TOKEN = "T00000000/B00000000/XXXXsupersecretXXXX"
WECOM_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"


@pytest.fixture
async def sink() -> AsyncIterator[tuple[Sink, str]]:
    recorder = Sink(secret="signing-key-123")
    async with serve(recorder) as base:
        yield recorder, base


@pytest.fixture
async def sender() -> AsyncIterator[Sender]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.5)) as client:
        yield Sender(client)


def slack(base: str) -> Target:
    return Target("team-slack", "slack", f"{base}/slack/{SECRET_TOKEN}", rate_per_minute=60)


def wecom(base: str) -> Target:
    return Target("ops-wecom", "wecom", f"{base}/wecom/send?key={WECOM_KEY}", rate_per_minute=20)


async def test_slack_delivery_and_429_with_retry_after(
    sink: tuple[Sink, str], sender: Sender
) -> None:
    recorder, base = sink
    target = slack(base)
    path = f"/slack/{SECRET_TOKEN}"
    recorder.script(path, [{"status": 429, "headers": {"Retry-After": "2"}, "text": "rate"}])
    limited = await sender.send(target, {"text": "hello"})
    assert (limited.verdict, limited.retry_after_s) == ("rate_limited", 2.0)
    ok = await sender.send(target, {"text": "漂移 hello", "blocks": []})
    assert ok.verdict == "delivered"
    received = recorder.received(path)
    assert [r["answered"] for r in received] == [429, 200]
    assert received[1]["json"]["text"] == "漂移 hello"
    assert received[1]["headers"]["content-type"] == "application/json; charset=utf-8"


async def test_wecom_45009_is_retried_later_and_93000_disables(
    sink: tuple[Sink, str], sender: Sender
) -> None:
    recorder, base = sink
    target = wecom(base)
    recorder.script(
        "/wecom/send",
        [
            {"status": 200, "json": {"errcode": 45009, "errmsg": "api freq out of limit"}},
            {"status": 200, "json": {"errcode": 93000, "errmsg": "invalid webhook url"}},
        ],
    )
    body = {"msgtype": "markdown", "markdown": {"content": "## 告警"}}
    limited = await sender.send(target, body)
    assert limited.verdict == "rate_limited"
    assert limited.retry_after_s == pytest.approx(3.0)
    invalid = await sender.send(target, body)
    assert invalid.verdict == "disable_channel"
    assert "93000" in invalid.detail
    assert (await sender.send(target, body)).verdict == "delivered"
    assert recorder.received("/wecom/send")[0]["query"] == f"key={WECOM_KEY}"


async def test_server_errors_are_retried_and_late_answers_are_uncertain(
    sink: tuple[Sink, str], sender: Sender
) -> None:
    recorder, base = sink
    target = slack(base)
    path = f"/slack/{SECRET_TOKEN}"
    recorder.script(path, [{"status": 500}, {"status": 200, "text": "ok", "delay_s": 1.5}])
    assert (await sender.send(target, {"text": "a"})).verdict == "retry"
    # The request reached the sink (it is recorded) but the answer came after the timeout: the
    # channel may have shown it, so it is not a plain retry.
    timed_out = await sender.send(target, {"text": "b"})
    assert timed_out.verdict == "uncertain"
    assert "timeout" in timed_out.detail
    assert [r["json"]["text"] for r in recorder.received(path)] == ["a", "b"]


async def test_permanent_4xx_fails(sink: tuple[Sink, str], sender: Sender) -> None:
    recorder, base = sink
    recorder.script(f"/slack/{SECRET_TOKEN}", [{"status": 400, "text": "invalid_blocks"}])
    outcome = await sender.send(slack(base), {"text": "x"})
    assert outcome.verdict == "failed"
    assert "invalid_blocks" in outcome.detail


async def test_generic_webhook_is_signed_with_hmac_sha256(
    sink: tuple[Sink, str], sender: Sender
) -> None:
    recorder, base = sink
    good = Target("hook", "webhook", f"{base}/hook", secret="signing-key-123")
    bad = Target("hook", "webhook", f"{base}/hook", secret="wrong-key")
    assert (await sender.send(good, {"alerts": []})).verdict == "delivered"
    assert (await sender.send(bad, {"alerts": []})).verdict == "delivered"
    first, second = recorder.received("/hook")
    assert first["headers"][SIGNATURE_HEADER.lower()].startswith("sha256=")
    assert first["signature_valid"] is True
    assert second["signature_valid"] is False


async def test_connection_errors_never_show_the_webhook_secret(
    sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 9 (discard) on loopback: the connection is refused.
    target = Target("team-slack", "slack", f"http://127.0.0.1:9/slack/{SECRET_TOKEN}")
    install_redaction(target.secrets(), ("httpx", "httpcore"))
    with caplog.at_level(logging.DEBUG):
        outcome = await sender.send(target, {"text": "x"})
    assert outcome.verdict == "retry", "a refused connection received nothing: a plain retry"
    assert "XXXXsupersecretXXXX" not in outcome.detail
    assert "XXXXsupersecretXXXX" not in caplog.text


def test_channel_urls_come_from_the_variables_they_name() -> None:
    config = notifications(
        """
notifications:
  channels:
    team-slack: {kind: slack, url_env: MLCP_SLACK_WEBHOOK_URL}
    hook: {kind: webhook, url_env: HOOK_URL, secret_env: HOOK_KEY, language: zh}
    robot: {kind: wecom, url_env: HOOK_URL, msgtype: text}
"""
    )
    env = {
        "MLCP_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/A/B/C",
        "HOOK_URL": "https://example.com/hook",
        "HOOK_KEY": "k",
    }
    resolved = resolve_targets(config, env)
    assert resolved.unset == {}
    targets = resolved.targets
    assert targets["team-slack"].url == env["MLCP_SLACK_WEBHOOK_URL"]
    assert targets["team-slack"].rate_per_minute == 60
    assert targets["hook"].secret == "k"
    assert targets["hook"].language == "zh"
    assert targets["robot"].msgtype == "text"
    assert targets["team-slack"].msgtype == "markdown"
    assert "hooks.slack.com" not in repr(targets["team-slack"])


@pytest.mark.parametrize(
    ("yaml_channel", "env", "message"),
    [
        (
            "{kind: wecom, url_env: W}",
            {"W": "ftp://x"},
            "notifications.channels.c.url_env: W is not an http(s) URL",
        ),
        (
            "{kind: webhook, url_env: W}",
            {"W": "https://x"},
            "notifications.channels.c.secret_env: a webhook channel needs",
        ),
        (
            "{kind: webhook, url_env: W, secret_env: K}",
            {"W": "https://x"},
            "notifications.channels.c.secret_env: the variable K is not set",
        ),
    ],
)
def test_bad_or_half_set_channel_variables_stop_the_start(
    yaml_channel: str, env: dict[str, str], message: str
) -> None:
    config = notifications(f"notifications: {{channels: {{c: {yaml_channel}}}}}")
    with pytest.raises(ConfigurationError) as info:
        resolve_targets(config, env)
    assert message in str(info.value)


def test_a_channel_whose_url_variable_is_unset_is_disabled_not_an_error() -> None:
    config = notifications(
        """
notifications:
  channels:
    team-slack: {kind: slack, url_env: MLCP_SLACK_WEBHOOK_URL}
    ops-wecom: {kind: wecom, url_env: MLCP_WECOM_WEBHOOK_URL}
    hook: {kind: webhook, url_env: HOOK_URL, secret_env: HOOK_KEY}
"""
    )
    # Blank counts as unset: compose's `VAR:` with nothing on the host passes no value.
    resolved = resolve_targets(config, {"MLCP_WECOM_WEBHOOK_URL": "https://x/w", "HOOK_URL": " "})
    assert list(resolved.targets) == ["ops-wecom"]
    assert resolved.unset == {"team-slack": "MLCP_SLACK_WEBHOOK_URL", "hook": "HOOK_URL"}


async def test_the_sink_runs_as_a_process_for_demos(spawn: Any) -> None:
    port = free_port()
    proc = spawn(["-m", "mlcp.examples.webhook_sink", "--port", str(port)], {}, "sink")
    base = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        assert proc.popen.poll() is None, proc.output()
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{base}/_sink/requests")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(up, what="the sink process")
    async with httpx.AsyncClient(base_url=base) as client:
        script = {"path": "/wecom/send", "responses": [{"json": {"errcode": 93000}}]}
        await client.post("/_sink/script", json=script)
        first = await client.post("/wecom/send?key=k", json={"msgtype": "text"})
        second = await client.post("/wecom/send?key=k", json={"msgtype": "text"})
        listed = (await client.get("/_sink/requests", params={"path": "/wecom/send"})).json()
    assert first.json()["errcode"] == 93000
    assert second.json() == {"errcode": 0, "errmsg": "ok"}
    assert [r["json"] for r in listed] == [{"msgtype": "text"}] * 2
