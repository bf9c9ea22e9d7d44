"""The notifier's pure decisions: alerts from events, severity, routing, token bucket, digest
planning, classification of Slack / WeCom / webhook answers, redaction of secrets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcp.contracts import (
    ApprovalRequested,
    CloudEvent,
    DriftDetected,
    GateFailed,
    GatePassed,
    ModelPromoted,
    ModelRolledBack,
    RunFailed,
    new_event,
)
from mlcp.contracts.common import Evidence, Window
from mlcp.contracts.monitoring import FeatureDrift
from mlcp.notifier.domain import (
    REDACTED,
    Alert,
    TokenBucket,
    alert_from_event,
    classify_response,
    no_usable_channel,
    plan_send,
    rate_per_minute,
    redact,
    route,
    secret_parts,
    short_name,
    usable_only,
)
from mlcp.policy.platform import Notifications, parse_platform_config

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# --- event factories (also used by the other notifier tests) ------------------------------------


def gate_failed(
    model: str = "churn", version: str = "1.2.0", corr: str = "corr-1"
) -> CloudEvent[Any]:
    """A GateFailed with one failed metric requirement."""
    return new_event(
        GateFailed(
            model=model,
            version=version,
            stage="quality",
            kind="metrics",
            reason="accuracy 0.9 < 0.92",
            evidence=(Evidence.evaluate("accuracy", 0.9, ">=", 0.92),),
        ),
        source="mlcp/gatekeeper",
        correlationid=corr,
    )


def drift_detected(model: str = "churn", version: str = "1.2.0", n: int = 0) -> CloudEvent[Any]:
    """A DriftDetected with one drifted PSI test and one quiet KS test."""
    return new_event(
        DriftDetected(
            model=model,
            version=version,
            alias="production",
            features=(
                FeatureDrift(
                    name="tenure", method="psi", score=0.31 + n / 1000, threshold=0.2, drifted=True
                ),
                FeatureDrift(name="charges", method="ks", score=0.4, threshold=0.01, drifted=False),
            ),
            window=Window(start=T0, end=T0 + timedelta(minutes=5), size=1000),
            share_drifted=0.5,
            share_threshold=0.5,
        ),
        source="mlcp/monitor",
        correlationid="corr-drift",
    )


def rolled_back(cause: str = "degraded") -> CloudEvent[Any]:
    return new_event(
        ModelRolledBack(
            model="churn",
            alias="production",
            from_version="1.3.0",
            to_version="1.2.0",
            cause=cause,
            reason="error_rate 0.09 > 0.05",
        ),
        source="mlcp/registry",
        correlationid="corr-rb",
    )


def run_failed() -> CloudEvent[Any]:
    return new_event(
        RunFailed(
            run_id="run-7",
            model="churn",
            reason="drift",
            stage="train",
            error="singular matrix",
            error_type="LinAlgError",
        ),
        source="mlcp/trainer",
    )


def approval_requested() -> CloudEvent[Any]:
    return new_event(
        ApprovalRequested(
            model="churn", version="1.2.0", stage="approve", expires_at=T0 + timedelta(hours=72)
        ),
        source="mlcp/gatekeeper",
    )


def promoted() -> CloudEvent[Any]:
    return new_event(
        ModelPromoted(
            model="churn",
            version="1.2.0",
            alias="canary",
            traffic_percent=10,
            previous_version="1.1.0",
            cause="gate_passed",
        ),
        source="mlcp/registry",
    )


def notifications(yaml_text: str) -> Notifications:
    return parse_platform_config(yaml_text).notifications


ROUTES = notifications(
    """
notifications:
  channels:
    team-slack: {kind: slack, url_env: MLCP_SLACK_WEBHOOK_URL}
    ops-wecom:  {kind: wecom, url_env: MLCP_WECOM_WEBHOOK_URL, language: zh}
    pager:      {kind: webhook, url_env: PAGER_URL, secret_env: PAGER_KEY}
  routes:
    - {events: [gate.failed, model.rolled_back, drift.detected, run.failed],
       channels: [team-slack, ops-wecom]}
    - {events: [approval.requested, model.promoted], channels: [team-slack]}
    - {events: ["*"], channels: [pager], min_severity: critical}
    - {events: [drift.detected], channels: [pager], models: [fraud]}
"""
)


# --- alerts --------------------------------------------------------------------------------------


def test_short_names_drop_prefix_and_version() -> None:
    assert short_name(GateFailed.TYPE) == "gate.failed"
    assert short_name(ModelRolledBack.TYPE) == "model.rolled_back"


def test_gate_failed_alert_carries_model_version_evidence_and_correlation() -> None:
    event = gate_failed()
    alert = alert_from_event(event)
    assert alert is not None
    assert (alert.kind, alert.model, alert.version, alert.severity) == (
        "gate.failed",
        "churn",
        "1.2.0",
        "warning",
    )
    assert alert.correlation_id == "corr-1"
    assert alert.event_id == event.id
    assert alert.facts["stage"] == "quality"
    assert alert.facts["reason"] == "accuracy 0.9 < 0.92"
    (line,) = alert.evidence
    assert (line.metric, line.observed, line.operator, line.threshold, line.flagged) == (
        "accuracy",
        0.9,
        ">=",
        0.92,
        True,
    )


def test_severity_per_event_type() -> None:
    severities = {
        a.kind: a.severity
        for a in (
            alert_from_event(e)
            for e in (
                gate_failed(),
                drift_detected(),
                rolled_back(),
                run_failed(),
                approval_requested(),
                promoted(),
            )
        )
        if a is not None
    }
    assert severities == {
        "gate.failed": "warning",
        "drift.detected": "warning",
        "model.rolled_back": "critical",
        "run.failed": "warning",
        "approval.requested": "info",
        "model.promoted": "info",
    }
    manual = alert_from_event(rolled_back(cause="manual"))
    assert manual is not None
    assert manual.severity == "warning"


def test_drift_alert_lists_drifted_features_first_with_their_direction() -> None:
    alert = alert_from_event(drift_detected())
    assert alert is not None
    first, second = alert.evidence
    assert (first.metric, first.operator, first.flagged) == ("tenure (psi)", ">", True)
    assert (second.metric, second.operator, second.flagged) == ("charges (ks)", "<", False)
    assert alert.facts["share"] == "50%"


def test_an_alert_is_an_occurrence_the_same_fact_again_is_a_new_alert() -> None:
    first, again = rolled_back(), rolled_back()  # the same rollback, happening a second time
    a, b = alert_from_event(first), alert_from_event(again)
    assert a is not None
    assert b is not None
    assert (a.event_id, b.event_id) == (first.id, again.id)
    assert a.event_id != b.event_id
    assert a.model_dump(exclude={"event_id", "occurred_at"}) == b.model_dump(
        exclude={"event_id", "occurred_at"}
    ), "same fact, two alerts: the event id is what tells them apart"


def test_events_that_are_not_alerts_give_none() -> None:
    passed = new_event(
        GatePassed(model="churn", version="1.2.0", stages=("quality",)), source="mlcp/gatekeeper"
    )
    assert alert_from_event(passed) is None


def test_alert_round_trips_through_json() -> None:
    alert = alert_from_event(drift_detected())
    assert alert is not None
    assert Alert.model_validate_json(alert.model_dump_json()) == alert


# --- routing -------------------------------------------------------------------------------------


def _alert(event: CloudEvent[Any]) -> Alert:
    alert = alert_from_event(event)
    assert alert is not None
    return alert


def test_routes_by_event_type() -> None:
    assert route(ROUTES, _alert(gate_failed())) == ["team-slack", "ops-wecom"]
    assert route(ROUTES, _alert(promoted())) == ["team-slack"]


def test_routes_by_severity_and_wildcard() -> None:
    assert route(ROUTES, _alert(rolled_back())) == ["team-slack", "ops-wecom", "pager"]
    assert route(ROUTES, _alert(rolled_back(cause="manual"))) == ["team-slack", "ops-wecom"]


def test_routes_by_model() -> None:
    assert "pager" not in route(ROUTES, _alert(drift_detected("churn")))
    assert route(ROUTES, _alert(drift_detected("fraud"))) == ["team-slack", "ops-wecom", "pager"]


def test_no_route_means_no_channel() -> None:
    assert route(Notifications(), _alert(gate_failed())) == []


def test_unset_channels_leave_the_routes_and_a_route_left_empty_goes() -> None:
    only_pager = usable_only(ROUTES, ["pager"])
    assert list(only_pager.channels) == ["pager"]
    assert route(only_pager, _alert(gate_failed())) == []
    assert route(only_pager, _alert(drift_detected("fraud"))) == ["pager"]
    assert route(usable_only(ROUTES, ["ops-wecom"]), _alert(gate_failed())) == ["ops-wecom"]


def test_the_start_fails_only_when_routes_need_a_channel_and_none_is_usable() -> None:
    assert no_usable_channel(ROUTES, ["ops-wecom"]) is None
    assert no_usable_channel(Notifications(), []) is None
    why = no_usable_channel(ROUTES, [])
    assert why is not None
    assert "no channel is usable" in why
    assert "MLCP_SLACK_WEBHOOK_URL or MLCP_WECOM_WEBHOOK_URL or PAGER_URL" in why


def test_default_rates_per_kind_and_override() -> None:
    channels = notifications(
        """
notifications:
  channels:
    s: {kind: slack, url_env: S}
    w: {kind: wecom, url_env: W}
    fast: {kind: wecom, url_env: W, rate_per_minute: 6}
"""
    ).channels
    assert rate_per_minute(channels["s"]) == 60
    assert rate_per_minute(channels["w"]) == 20
    assert rate_per_minute(channels["fast"]) == 6


# --- rate limits ---------------------------------------------------------------------------------


def test_wecom_bucket_spaces_messages_three_seconds_apart() -> None:
    bucket = TokenBucket.per_minute(20, now=0.0)
    assert bucket.wait_s(0.0) == 0
    bucket.take(0.0)
    assert bucket.wait_s(0.0) == pytest.approx(3.0)
    assert bucket.wait_s(2.0) == pytest.approx(1.0)
    assert bucket.wait_s(3.0) == 0


@settings(max_examples=40, deadline=None)
@given(
    per_minute=st.sampled_from([20.0, 60.0, 6.0]),
    gaps=st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=60),
)
def test_bucket_never_allows_more_than_the_rate_in_any_window(
    per_minute: float, gaps: list[float]
) -> None:
    """Sending whenever the bucket allows: any 60 s window holds at most ``per_minute`` sends."""
    bucket = TokenBucket.per_minute(per_minute, now=0.0)
    now, sent = 0.0, []
    for gap in gaps:
        now += gap
        now += bucket.wait_s(now)
        bucket.take(now)
        sent.append(now)
    for start in sent:
        in_window = [t for t in sent if start <= t < start + 60 - 1e-9]
        assert len(in_window) <= per_minute


def test_retry_after_pauses_the_bucket() -> None:
    bucket = TokenBucket.per_minute(60, now=0.0)
    bucket.pause_until(5.0)
    assert bucket.tokens(1.0) == 0
    assert bucket.wait_s(1.0) == pytest.approx(4.0)
    assert bucket.wait_s(6.0) == 0


def test_a_burst_beyond_the_tokens_becomes_one_digest() -> None:
    assert plan_send(1, 0.0) == "single"
    assert plan_send(3, 5.0) == "single"  # the bucket pays for each
    assert plan_send(100, 1.0) == "digest"
    unlimited = TokenBucket.per_minute(6_000_000, now=0.0)
    assert plan_send(100, unlimited.tokens(0.0)) == "single"


# --- answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "headers", "body", "verdict", "retry_after"),
    [
        ("slack", 200, {}, "ok", "delivered", None),
        ("slack", 429, {"retry-after": "7"}, "", "rate_limited", 7.0),
        ("slack", 429, {}, "", "rate_limited", 1.0),
        ("slack", 500, {}, "", "retry", None),
        ("slack", 400, {}, "invalid_blocks", "failed", None),
        ("slack", 404, {}, "no_service", "failed", None),
        ("wecom", 200, {}, '{"errcode":0,"errmsg":"ok"}', "delivered", None),
        (
            "wecom",
            200,
            {},
            '{"errcode":45009,"errmsg":"api freq out of limit"}',
            "rate_limited",
            3.0,
        ),
        (
            "wecom",
            200,
            {},
            '{"errcode":93000,"errmsg":"invalid webhook url"}',
            "disable_channel",
            None,
        ),
        ("wecom", 200, {}, '{"errcode":40058,"errmsg":"content too long"}', "failed", None),
        ("wecom", 200, {}, "<html>", "retry", None),
        ("wecom", 502, {}, "", "retry", None),
        ("webhook", 204, {}, "", "delivered", None),
        ("webhook", 401, {}, "bad signature", "failed", None),
        ("webhook", 503, {}, "", "retry", None),
    ],
)
def test_answers_are_classified(
    kind: str,
    status: int,
    headers: dict[str, str],
    body: str,
    verdict: str,
    retry_after: float | None,
) -> None:
    rate = 20.0 if kind == "wecom" else 60.0
    outcome = classify_response(kind, status, headers, body, rate_per_minute=rate)
    assert outcome.verdict == verdict
    assert outcome.retry_after_s == retry_after


# --- secrets -------------------------------------------------------------------------------------

SLACK = "https://hooks.slack.com/services/T0001/B0002/XyZsecretToken123"
WECOM = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"


def test_redact_removes_urls_keys_and_tokens() -> None:
    secrets = secret_parts(SLACK) + secret_parts(WECOM)
    text = (
        f"POST {SLACK} failed; retry {WECOM}; token XyZsecretToken123; "
        "key 693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
    )
    cleaned = redact(text, secrets)
    for secret in ("XyZsecretToken123", "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa", "hooks.slack.com/"):
        assert secret not in cleaned
    assert REDACTED in cleaned


def test_redact_catches_unknown_webhook_urls() -> None:
    cleaned = redact("see https://hooks.slack.com/services/A/B/C and ?key=abc123&x=1", [])
    assert "services/A" not in cleaned
    assert "abc123" not in cleaned
