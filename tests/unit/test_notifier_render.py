"""Message rendering: English and Chinese templates, Slack Block Kit, WeCom markdown/text, the
signed webhook body, digests that represent every alert, and size limits on UTF-8 boundaries."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcp.contracts import GateFailed, RunFailed, new_event
from mlcp.contracts.common import Evidence
from mlcp.notifier.domain import Alert, alert_from_event
from mlcp.notifier.render import (
    SLACK_FIELD_MAX_CHARS,
    SLACK_HEADER_MAX_CHARS,
    SLACK_SECTION_MAX_CHARS,
    WECOM_MARKDOWN_MAX_BYTES,
    WECOM_TEXT_MAX_BYTES,
    digest_payload,
    registry_link,
    single_payload,
    slack_payload,
    title,
    truncate_utf8,
    wecom_markdown,
    wecom_text,
)
from tests.unit.test_notifier_domain import drift_detected, gate_failed, run_failed

pytestmark = pytest.mark.unit

REGISTRY = "http://registry.example:8081"


def _alert(event: object) -> Alert:
    alert = alert_from_event(event)  # type: ignore[arg-type]
    assert alert is not None
    return alert


def huge_gate_failed() -> Alert:
    """A GateFailed whose reason and evidence are far beyond every channel limit (Chinese text)."""
    reason = "准确率低于阈值，" * 500  # 8 chars × 3 bytes × 500 = 12 000 bytes
    evidence = tuple(
        Evidence(
            metric=f"metric_{i}",
            observed=0.5,
            operator=">=",
            threshold=0.9,
            satisfied=False,
            detail="细节" * 40,
        )
        for i in range(100)
    )
    event = new_event(
        GateFailed(
            model="churn",
            version="1.2.0",
            stage="quality",
            kind="metrics",
            reason=reason[:4096],
            evidence=evidence,
        ),
        source="mlcp/gatekeeper",
        correlationid="corr-big",
    )
    return _alert(event)


# --- templates -----------------------------------------------------------------------------------


def test_english_and_chinese_titles() -> None:
    alert = _alert(gate_failed())
    assert title(alert, "en") == "Gate failed: churn 1.2.0 at stage quality"
    assert title(alert, "zh") == "门禁未通过：churn 1.2.0，阶段 quality"


def test_slack_message_has_blocks_text_fallback_evidence_link_and_correlation() -> None:
    alert = _alert(gate_failed())
    link = registry_link(REGISTRY, alert)
    assert link == "http://registry.example:8081/models/churn/versions/1.2.0"
    payload = slack_payload(alert, "en", link, "ref-1")
    text = json.dumps(payload)
    assert payload["text"].startswith("[warning] Gate failed: churn 1.2.0")
    assert [b["type"] for b in payload["blocks"]] == ["header", "section", "section", "context"]
    assert "observed 0.9 vs threshold >= 0.92" in text
    assert f"<{link}|Open in the registry>" in text
    assert "corr-1" in text
    assert "ref-1" in text


def test_wecom_markdown_in_chinese() -> None:
    alert = _alert(gate_failed())
    payload = wecom_markdown(alert, "zh", registry_link(REGISTRY, alert), "ref-1")
    content = payload["markdown"]["content"]
    assert payload["msgtype"] == "markdown"
    assert "## 门禁未通过：churn 1.2.0，阶段 quality" in content
    assert "> 模型：churn" in content
    assert '<font color="warning">警告</font>' in content
    assert "accuracy：观测值 0.9 vs 阈值 >= 0.92" in content
    assert (
        "[在模型注册中心查看](http://registry.example:8081/models/churn/versions/1.2.0)" in content
    )
    assert "关联 ID：`corr-1`" in content


def test_run_failed_links_to_the_model_and_shows_the_error() -> None:
    alert = _alert(run_failed())
    payload = single_payload("wecom", alert, "en", REGISTRY, "r")
    content = payload["markdown"]["content"]
    assert "Training run failed: churn (stage train)" in content
    assert "LinAlgError: singular matrix" in content
    assert "(http://registry.example:8081/models/churn)" in content


def test_webhook_body_is_structured() -> None:
    alert = _alert(drift_detected())
    body = single_payload("webhook", alert, "en", REGISTRY, "ref-9")
    (item,) = body["alerts"]
    assert body["digest"] is False
    assert body["ref"] == "ref-9"
    assert item["event_id"] == alert.event_id
    assert item["kind"] == "drift.detected"
    assert item["evidence"][0]["metric"] == "tenure (psi)"
    assert item["link"].endswith("/models/churn/versions/1.2.0")


def test_slack_escapes_control_characters_in_event_text() -> None:
    event = new_event(
        RunFailed(
            run_id="r", model="churn", reason="manual", stage="train", error="x < y & <!channel>"
        ),
        source="mlcp/trainer",
    )
    text = json.dumps(slack_payload(_alert(event), "en", "http://r", "ref")["blocks"])
    assert "<!channel>" not in text
    assert "&lt;!channel&gt;" in text


# --- limits --------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "zh"])
def test_oversized_alert_respects_every_channel_limit(language: str) -> None:
    alert = huge_gate_failed()
    link = registry_link(REGISTRY, alert)
    md = wecom_markdown(alert, language, link, "ref")["markdown"]["content"]  # type: ignore[arg-type]
    assert len(md.encode("utf-8")) <= WECOM_MARKDOWN_MAX_BYTES
    assert link in md, "the link survives truncation"
    text = wecom_text(alert, language, link, "ref")["text"]["content"]  # type: ignore[arg-type]
    assert len(text.encode("utf-8")) <= WECOM_TEXT_MAX_BYTES
    assert md.startswith("## "), "the title stays first"
    for rendered in (text, md):
        assert link in rendered, "the link survives truncation"
        assert "corr-big" in rendered, "the correlation id survives truncation"
        assert rendered.rstrip().endswith("ref"), "the ref line survives truncation"
    slack = slack_payload(alert, language, link, "ref")  # type: ignore[arg-type]
    header, fields, evidence, _context = slack["blocks"]
    assert len(header["text"]["text"]) <= SLACK_HEADER_MAX_CHARS
    assert len(fields["fields"]) <= 10
    assert all(len(f["text"]) <= SLACK_FIELD_MAX_CHARS for f in fields["fields"])
    assert len(evidence["text"]["text"]) <= SLACK_SECTION_MAX_CHARS
    assert len(slack["text"]) <= 3000
    assert link in slack["text"]


@settings(max_examples=60, deadline=None)
@given(text=st.text(min_size=0, max_size=300), limit=st.integers(min_value=1, max_value=400))
def test_utf8_truncation_never_splits_a_character(text: str, limit: int) -> None:
    cut = truncate_utf8(text, limit)
    encoded = cut.encode("utf-8")  # would raise on a lone surrogate half; decoding proves validity
    assert len(encoded) <= limit
    assert encoded.decode("utf-8") == cut
    if len(text.encode("utf-8")) <= limit:
        assert cut == text
    else:
        assert text.startswith(cut.removesuffix("…"))


def test_truncation_at_a_chinese_character_boundary() -> None:
    assert truncate_utf8("漂移漂移", 7) == "漂…"  # 3 bytes + the 3-byte marker; no half character


# --- digests -------------------------------------------------------------------------------------


def _drifts(n: int) -> list[Alert]:
    models = ["churn", "fraud"]
    return [_alert(drift_detected(models[i % 2], n=i)) for i in range(n)]


@pytest.mark.parametrize("language", ["en", "zh"])
def test_wecom_digest_represents_every_alert_within_4096_bytes(language: str) -> None:
    alerts = _drifts(100)
    content = digest_payload("wecom", alerts, language, REGISTRY, "ref-d")["markdown"]["content"]  # type: ignore[arg-type]
    assert len(content.encode("utf-8")) <= WECOM_MARKDOWN_MAX_BYTES
    counts = dict(re.findall(r"drift\.detected · (\w+): (\d+)", content))
    assert counts == {"churn": "50", "fraud": "50"}
    listed = len(re.findall(r"\([0-9a-f]{8}\)", content))
    more = re.search(r"(?:and|另有) (\d+)", content)
    assert more is not None
    assert listed + int(more.group(1)) == 100, "listed + 'and N more' account for every alert"
    assert "ref-d" in content


def test_slack_digest_counts_every_alert_and_fits_blocks() -> None:
    alerts = _drifts(100)
    payload = digest_payload("slack", alerts, "en", REGISTRY, "ref-d")
    text = json.dumps(payload, ensure_ascii=False)
    assert "100 alerts" in payload["text"]
    assert "drift.detected · churn: 50" in text
    assert "drift.detected · fraud: 50" in text
    assert all(
        len(b["text"]["text"]) <= SLACK_SECTION_MAX_CHARS
        for b in payload["blocks"]
        if b["type"] == "section"
    )


def test_small_digest_lists_each_alert() -> None:
    alerts = _drifts(3)
    content = digest_payload("wecom", alerts, "en", REGISTRY, "r")["markdown"]["content"]
    for alert in alerts:
        assert f"({alert.event_id[:8]})" in content
    assert "more" not in content


def test_webhook_digest_carries_every_alert_in_full() -> None:
    alerts = _drifts(100)
    body = digest_payload("webhook", alerts, "en", REGISTRY, "r")
    assert body["digest"] is True
    assert [a["event_id"] for a in body["alerts"]] == [a.event_id for a in alerts]


@pytest.mark.parametrize("language", ["en", "zh"])
def test_wecom_text_messages_and_digests_fit_2048_bytes(language: str) -> None:
    single = single_payload("wecom", huge_gate_failed(), language, REGISTRY, "r", msgtype="text")  # type: ignore[arg-type]
    assert single["msgtype"] == "text"
    assert len(single["text"]["content"].encode("utf-8")) <= WECOM_TEXT_MAX_BYTES
    digest = digest_payload("wecom", _drifts(100), language, REGISTRY, "r", msgtype="text")  # type: ignore[arg-type]
    content = digest["text"]["content"]
    assert digest["msgtype"] == "text"
    assert len(content.encode("utf-8")) <= WECOM_TEXT_MAX_BYTES
    assert "#" not in content.split("\n")[0], "plain text, no markdown header"
    counts = dict(re.findall(r"drift\.detected · (\w+): (\d+)", content))
    assert counts == {"churn": "50", "fraud": "50"}
