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
    SLACK_TEXT_MAX_CHARS,
    WECOM_MARKDOWN_MAX_BYTES,
    WECOM_TEXT_MAX_BYTES,
    digest_payload,
    fields,
    registry_link,
    single_payload,
    slack_escape,
    slack_payload,
    title,
    truncate_mrkdwn,
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
    assert "observed 0.9 vs threshold &gt;= 0.92" in text, "mrkdwn-escaped, blocks and text"
    assert "observed 0.9 vs threshold &gt;= 0.92" in payload["text"]
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


HOSTILE = "x < y & z > w <!channel> <!here> <https://evil.example/steal|click here>"


def hostile_gate_failed() -> Alert:
    """A GateFailed whose reason and evidence detail try every Slack control sequence."""
    return _alert(
        new_event(
            GateFailed(
                model="churn",
                version="1.2.0",
                stage="quality",
                kind="metrics",
                reason=HOSTILE,
                evidence=(
                    Evidence(
                        metric="accuracy",
                        observed=0.9,
                        operator=">=",
                        threshold=0.92,
                        satisfied=False,
                        detail=HOSTILE,
                    ),
                ),
            ),
            source="mlcp/gatekeeper",
            correlationid="corr-1",
        )
    )


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


@pytest.mark.parametrize("language", ["en", "zh"])
def test_slack_fallback_text_is_escaped_exactly_like_the_blocks(language: str) -> None:
    alert = hostile_gate_failed()
    payload = slack_payload(alert, language, registry_link(REGISTRY, alert), "ref-1")  # type: ignore[arg-type]
    text = payload["text"]
    blocks = json.dumps(payload["blocks"], ensure_ascii=False)
    for raw in ("<!channel>", "<!here>", "<https://evil.example/steal|click here>"):
        assert raw not in text, f"{raw} would ping or link from the notification text"
        assert raw not in blocks
    escaped = slack_escape(HOSTILE)
    assert escaped == (
        "x &lt; y &amp; z &gt; w &lt;!channel&gt; &lt;!here&gt; "
        "&lt;https://evil.example/steal|click here&gt;"
    )
    # Every value shown in the blocks is in the text with the very same escaping.
    shown = fields(alert, language)  # type: ignore[arg-type]
    assert shown, "the alert shows no field at all"
    for _label, value in shown:
        assert slack_escape(value) in blocks
        assert slack_escape(value) in text
    assert f"({escaped})" in text, "the evidence detail"
    assert f"({escaped})" in blocks
    # Nothing but our own link is a control sequence: every '<' left in the text is escaped.
    assert "<" not in text
    assert ">" not in text


def test_slack_text_cut_never_leaves_half_an_entity() -> None:
    assert truncate_mrkdwn("ab&amp;cd", 5) == "ab…"
    assert truncate_mrkdwn("ab&lt;cd", 6) == "ab…"
    assert truncate_mrkdwn("ab&lt;cd", 7) == "ab&lt;…"
    alert = _alert(
        new_event(
            RunFailed(run_id="r", model="churn", reason="manual", stage="train", error="&" * 5000),
            source="mlcp/trainer",
        )
    )
    text = slack_payload(alert, "en", "http://r", "ref")["text"]
    assert len(text) <= SLACK_TEXT_MAX_CHARS
    assert re.search(r"&[a-z]{0,3}…", text) is None
    assert text.endswith("ref: ref"), "the ref line survives"


# --- possible repeats ----------------------------------------------------------------------------

FIRST = "11111111-1111-4111-8111-111111111111"


@pytest.mark.parametrize(
    ("kind", "msgtype"), [("slack", "markdown"), ("wecom", "markdown"), ("wecom", "text")]
)
@pytest.mark.parametrize("language", ["en", "zh"])
def test_a_possible_repeat_is_tagged_with_the_original_ref(
    kind: str, msgtype: str, language: str
) -> None:
    alert = _alert(gate_failed())
    plain = single_payload(kind, alert, language, REGISTRY, "ref-2", msgtype=msgtype)  # type: ignore[arg-type]
    tagged = single_payload(
        kind,
        alert,
        language,  # type: ignore[arg-type]
        REGISTRY,
        "ref-2",
        msgtype=msgtype,
        repeat_of=(FIRST,),
    )
    tag = "↻ possibly repeated" if language == "en" else "↻ 可能重复"
    assert "↻" not in json.dumps(plain, ensure_ascii=False)
    if kind == "slack":
        first_block = tagged["blocks"][0]
        assert first_block["type"] == "context"
        assert first_block["elements"][0]["text"].startswith(tag)
        assert FIRST in first_block["elements"][0]["text"]
        visible = tagged["text"]
    else:
        visible = tagged[msgtype]["content"]
    first_line = visible.split("\n")[0]
    assert tag in first_line, "the tag is the first thing a reader (and a notification) sees"
    assert FIRST in first_line, "with the ref of the message it may repeat"
    assert "ref-2" in visible, "and its own ref"


def test_a_webhook_repeat_says_so_in_its_fields() -> None:
    alert = _alert(gate_failed())
    body = single_payload("webhook", alert, "en", REGISTRY, "ref-2", repeat_of=(FIRST,))
    assert body["possible_repeat"] is True
    assert body["repeat_of"] == [FIRST]
    assert body["alerts"][0]["repeat_of"] == [FIRST]
    assert body["alerts"][0]["text"].startswith(f"↻ possibly repeated (original ref: {FIRST})")
    fresh = single_payload("webhook", alert, "en", REGISTRY, "ref-3")
    assert (fresh["possible_repeat"], fresh["repeat_of"]) == (False, [])


def test_a_digest_says_how_many_of_its_alerts_may_be_repeats() -> None:
    alerts = _drifts(10)
    repeats = {a.event_id: (FIRST,) for a in alerts[:4]}
    content = digest_payload("wecom", alerts, "en", REGISTRY, "ref-d", repeats=repeats)["markdown"][
        "content"
    ]
    assert content.startswith(
        f'<font color="warning">↻ possibly repeated: 4 of 10 alerts (original ref: {FIRST})'
    )
    assert content.count("↻ [warning]") == 4, "each possibly repeated alert is marked"
    slack = digest_payload("slack", alerts, "en", REGISTRY, "ref-d", repeats=repeats)
    assert slack["text"].startswith("↻ possibly repeated: 4 of 10 alerts")
    assert slack["blocks"][0]["type"] == "context"
    hook = digest_payload("webhook", alerts, "en", REGISTRY, "ref-d", repeats=repeats)
    assert hook["repeat_of"] == [FIRST]
    assert [bool(a["repeat_of"]) for a in hook["alerts"]] == [True] * 4 + [False] * 6
    whole = digest_payload(
        "wecom", alerts, "zh", REGISTRY, "r", repeats={a.event_id: (FIRST,) for a in alerts}
    )
    assert (
        whole["markdown"]["content"]
        .split("\n")[0]
        .endswith(f"↻ 可能重复（原编号：{FIRST}）</font>")
    )


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


def _many_models(n: int) -> list[Alert]:
    """One drift alert for each of ``n`` models with long names: n count lines."""
    return [_alert(drift_detected(f"model-{i:03d}-" + "x" * 40, n=i)) for i in range(n)]


@pytest.mark.parametrize("msgtype", ["markdown", "text"])
@pytest.mark.parametrize("language", ["en", "zh"])
def test_wecom_digest_with_many_count_lines_keeps_its_ref_and_link_footer(
    language: str, msgtype: str
) -> None:
    alerts = _many_models(300)  # ~300 × 70 bytes of count lines: far beyond 4096
    repeats = {alerts[0].event_id: (FIRST,)}
    payload = digest_payload(
        "wecom",
        alerts,
        language,
        REGISTRY,
        "ref-footer",
        msgtype=msgtype,
        repeats=repeats,  # type: ignore[arg-type]
    )
    content = payload[msgtype]["content"]
    limit = WECOM_MARKDOWN_MAX_BYTES if msgtype == "markdown" else WECOM_TEXT_MAX_BYTES
    assert len(content.encode("utf-8")) <= limit
    last = content.rstrip().split("\n")[-1]
    assert last.endswith("ref-footer"), f"the ref closes the message: {last!r}"
    assert f"{REGISTRY}/models" in last, "with the registry link"
    assert "corr-drift" in content, "and the correlation line"
    assert FIRST in content.split("\n")[0], "the repeat tag stays first"
    # The count lines shown plus the 'and G more groups (N alerts)' line still cover them all.
    shown = [int(n) for n in re.findall(r"drift\.detected · [\w-]+: (\d+)", content)]
    more = re.search(
        r"(?:and (\d+) more groups \((\d+) alerts\)|另有 (\d+) 组（(\d+) 条告警）)", content
    )
    assert more is not None, content[-400:]
    groups, hidden = [int(g) for g in more.groups() if g is not None]
    assert len(shown) + groups == 300
    assert sum(shown) + hidden == 300


def test_slack_digest_text_with_many_count_lines_keeps_its_footer() -> None:
    payload = digest_payload("slack", _many_models(300), "en", REGISTRY, "ref-footer")
    text = payload["text"]
    assert len(text) <= SLACK_TEXT_MAX_CHARS
    assert text.endswith("ref: ref-footer")
    assert "more groups" in text
    counts = payload["blocks"][1]["text"]["text"]
    assert len(counts) <= SLACK_SECTION_MAX_CHARS
    assert "more groups" in counts


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
