"""Words and payloads: alerts rendered for Slack (Block Kit), WeCom (markdown/text) and webhooks.

Pure functions, English and Chinese. Every payload respects its channel's documented size
limits — WeCom counts UTF-8 bytes (markdown ≤ 4096, text ≤ 2048), Slack counts characters per
block element — and truncation never splits a character.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from mlcp.notifier.domain import Alert, EvidenceLine

Language = Literal["en", "zh"]

WECOM_MARKDOWN_MAX_BYTES = 4096
WECOM_TEXT_MAX_BYTES = 2048
SLACK_HEADER_MAX_CHARS = 150
SLACK_SECTION_MAX_CHARS = 3000
SLACK_FIELD_MAX_CHARS = 2000
SLACK_MAX_FIELDS = 10
SLACK_CONTEXT_MAX_CHARS = 2000
SLACK_TEXT_MAX_CHARS = 3000  # the notification fallback; Slack truncates past 40 000 anyway
MAX_EVIDENCE_LINES = 12
ELLIPSIS = "…"

TITLES: dict[Language, dict[str, str]] = {
    "en": {
        "gate.failed": "Gate failed: {model} {version} at stage {stage}",
        "drift.detected": "Drift detected: {model} {version} ({share} of features drifted)",
        "model.rolled_back": "Rolled back: {model} {alias} {from_version} → {to_version}",
        "run.failed": "Training run failed: {model} (stage {stage})",
        "approval.requested": "Approval requested: {model} {version}, stage {stage}",
        "model.promoted": "Promoted: {model} {version} → {alias} ({traffic}% of traffic)",
    },
    "zh": {
        "gate.failed": "门禁未通过：{model} {version}，阶段 {stage}",
        "drift.detected": "检测到数据漂移：{model} {version}（{share} 的特征发生漂移）",
        "model.rolled_back": "模型已回滚：{model} {alias} {from_version} → {to_version}",
        "run.failed": "训练失败：{model}（阶段 {stage}）",
        "approval.requested": "等待审批：{model} {version}，阶段 {stage}",
        "model.promoted": "模型已发布：{model} {version} → {alias}（{traffic}% 流量）",
    },
}

LABELS: dict[Language, dict[str, str]] = {
    "en": {
        "model": "Model",
        "version": "Version",
        "severity": "Severity",
        "reason": "Reason",
        "error": "Error",
        "cause": "Cause",
        "actor": "By",
        "run_id": "Run",
        "check": "Check",
        "window": "Window (predictions)",
        "expires_at": "Expires",
        "previous_version": "Previous version",
        "correlation": "Correlation id",
        "event": "Event",
        "link": "Open in the registry",
        "evidence": "Evidence (observed vs threshold)",
        "observed": "observed",
        "threshold": "threshold",
        "missing": "missing",
        "digest": "{count} alerts (rate-limited digest)",
        "more": "… and {count} more",
        "ref": "ref",
        "info": "info",
        "warning": "warning",
        "critical": "critical",
    },
    "zh": {
        "model": "模型",
        "version": "版本",
        "severity": "级别",
        "reason": "原因",
        "error": "错误",
        "cause": "起因",
        "actor": "操作人",
        "run_id": "运行",
        "check": "检查",
        "window": "窗口（预测数）",
        "expires_at": "截止时间",
        "previous_version": "之前版本",
        "correlation": "关联 ID",
        "event": "事件",
        "link": "在模型注册中心查看",
        "evidence": "依据（观测值 vs 阈值）",
        "observed": "观测值",
        "threshold": "阈值",
        "missing": "缺失",
        "digest": "{count} 条告警（限流汇总）",
        "more": "…… 另有 {count} 条",
        "ref": "编号",
        "info": "通知",
        "warning": "警告",
        "critical": "严重",
    },
}

# Facts shown as labelled fields, in this order (the others only feed the title).
FIELD_FACTS = (
    "reason",
    "error",
    "cause",
    "actor",
    "run_id",
    "check",
    "window",
    "expires_at",
    "previous_version",
)
WECOM_COLOR = {"info": "info", "warning": "warning", "critical": "warning"}
SLACK_EMOJI = {
    "info": ":information_source:",
    "warning": ":warning:",
    "critical": ":rotating_light:",
}


# --- truncation ----------------------------------------------------------------------------------


def truncate_utf8(text: str, max_bytes: int, *, marker: str = ELLIPSIS) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes on a character boundary, marked."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    room = max_bytes - len(marker.encode("utf-8"))
    if room <= 0:
        return data[:max_bytes].decode("utf-8", errors="ignore")
    # errors="ignore" drops the partial character a byte cut may leave at the end.
    return data[:room].decode("utf-8", errors="ignore") + marker


def truncate_chars(text: str, max_chars: int, *, marker: str = ELLIPSIS) -> str:
    """``text`` cut to at most ``max_chars`` characters, marked."""
    if len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - len(marker))] + marker


def slack_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control sequences."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- pieces --------------------------------------------------------------------------------------


def registry_link(registry_url: str, alert: Alert) -> str:
    """Where a person looks at the model (version) in the registry."""
    base = registry_url.rstrip("/")
    if alert.version:
        return f"{base}/models/{alert.model}/versions/{alert.version}"
    return f"{base}/models/{alert.model}"


class _Missing(dict[str, str]):
    # A template naming a fact the event did not carry shows "?" instead of failing.
    def __missing__(self, key: str) -> str:
        return "?"


def title(alert: Alert, language: Language) -> str:
    """The one-line summary of an alert."""
    template = TITLES[language].get(alert.kind, "{kind}: {model} {version}")
    values = {"model": alert.model, "version": alert.version or "", "kind": alert.kind}
    values.update(alert.facts)
    return " ".join(template.format_map(_Missing(values)).split())


def _number(value: float | None, language: Language) -> str:
    return LABELS[language]["missing"] if value is None else f"{value:.4g}"


def evidence_text(line: EvidenceLine, language: Language) -> str:
    """``accuracy: observed 0.9 vs threshold >= 0.92`` (with a mark on the offending line)."""
    labels = LABELS[language]
    sep = "：" if language == "zh" else ": "
    mark = "✗ " if line.flagged else "✓ "
    text = (
        f"{mark}{line.metric}{sep}{labels['observed']} {_number(line.observed, language)} vs "
        f"{labels['threshold']} {line.operator} {_number(line.threshold, language)}"
    )
    return f"{text} ({line.detail})" if line.detail else text


def fields(alert: Alert, language: Language) -> list[tuple[str, str]]:
    """(label, value) pairs shown under the title."""
    labels = LABELS[language]
    out = [(labels["model"], alert.model)]
    if alert.version:
        out.append((labels["version"], alert.version))
    out.append((labels["severity"], labels[alert.severity]))
    out += [(labels[k], alert.facts[k]) for k in FIELD_FACTS if k in alert.facts]
    return out


def _evidence_lines(alert: Alert, language: Language) -> list[str]:
    lines = [evidence_text(e, language) for e in alert.evidence[:MAX_EVIDENCE_LINES]]
    if len(alert.evidence) > MAX_EVIDENCE_LINES:
        more = len(alert.evidence) - MAX_EVIDENCE_LINES
        lines.append(LABELS[language]["more"].format(count=more))
    return lines


def _plain_parts(alert: Alert, language: Language, link: str, ref: str) -> tuple[str, str, str]:
    """(title line, details, correlation/link/ref lines) of the plain-text rendering."""
    labels = LABELS[language]
    sep = "：" if language == "zh" else ": "
    head = f"[{labels[alert.severity]}] {title(alert, language)}"
    lines = [f"{k}{sep}{v}" for k, v in fields(alert, language)[3 if alert.version else 2 :]]
    if alert.evidence:
        lines.append(labels["evidence"] + sep)
        lines += [f"  {e}" for e in _evidence_lines(alert, language)]
    tail = [f"{labels['correlation']}{sep}{alert.correlation_id}"] if alert.correlation_id else []
    tail += [f"{labels['link']}{sep}{link}", f"{labels['ref']}{sep}{ref}"]
    return head, "\n".join(lines), "\n".join(tail)


def fit(head: str, body: str, tail: str, limit: int, *, utf8: bool) -> str:
    """``head``, ``body``, ``tail`` on separate lines within ``limit`` (bytes if ``utf8``, else
    characters): the body is cut so that the title and the link/ref lines always survive."""
    size = (lambda t: len(t.encode("utf-8"))) if utf8 else len
    cut = truncate_utf8 if utf8 else truncate_chars
    head = cut(head, limit // 4)
    tail = cut(tail, limit // 2)
    if not body:
        return f"{head}\n{tail}"
    room = limit - size(head) - size(tail) - 2
    return f"{head}\n{cut(body, max(room, 0))}\n{tail}" if room > 1 else f"{head}\n{tail}"


def plain_text(alert: Alert, language: Language, link: str, ref: str) -> str:
    """The whole alert as plain text (Slack's fallback, WeCom text, the webhook's ``text``)."""
    return "\n".join(p for p in _plain_parts(alert, language, link, ref) if p)


# --- Slack ---------------------------------------------------------------------------------------


def slack_payload(alert: Alert, language: Language, link: str, ref: str) -> dict[str, Any]:
    """An incoming-webhook body: Block Kit blocks plus the ``text`` fallback for notifications."""
    labels = LABELS[language]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": truncate_chars(title(alert, language), SLACK_HEADER_MAX_CHARS),
                "emoji": True,
            },
        },
        {
            "type": "section",
            "fields": [
                {
                    "type": "mrkdwn",
                    "text": truncate_chars(f"*{k}*\n{slack_escape(v)}", SLACK_FIELD_MAX_CHARS),
                }
                for k, v in fields(alert, language)[:SLACK_MAX_FIELDS]
            ],
        },
    ]
    if alert.evidence:
        body = f"*{labels['evidence']}*\n" + "\n".join(
            slack_escape(line) for line in _evidence_lines(alert, language)
        )
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": truncate_chars(body, SLACK_SECTION_MAX_CHARS)},
            }
        )
    context = f"{SLACK_EMOJI[alert.severity]} <{link}|{labels['link']}>"
    if alert.correlation_id:
        context += f" · {labels['correlation']}: `{alert.correlation_id}`"
    context += f" · {labels['ref']}: `{ref}`"
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": truncate_chars(context, SLACK_CONTEXT_MAX_CHARS)}
            ],
        }
    )
    fallback = fit(*_plain_parts(alert, language, link, ref), SLACK_TEXT_MAX_CHARS, utf8=False)
    return {"text": fallback, "blocks": blocks}


# --- WeCom ---------------------------------------------------------------------------------------


def wecom_markdown(alert: Alert, language: Language, link: str, ref: str) -> dict[str, Any]:
    """A group-robot ``markdown`` body (≤ 4096 UTF-8 bytes)."""
    labels = LABELS[language]
    sep = "：" if language == "zh" else ": "
    color = WECOM_COLOR[alert.severity]
    lines = [f"## {title(alert, language)}"]
    for k, v in fields(alert, language):
        value = f'<font color="{color}">{v}</font>' if k == labels["severity"] else v
        lines.append(f"> {k}{sep}{value}")
    if alert.evidence:
        lines.append(f"**{labels['evidence']}**")
        lines += [f"> {e}" for e in _evidence_lines(alert, language)]
    tail = f"[{labels['link']}]({link})  {labels['ref']}{sep}{ref}"
    if alert.correlation_id:
        tail = f"{labels['correlation']}{sep}`{alert.correlation_id}`\n{tail}"
    content = fit(lines[0], "\n".join(lines[1:]), tail, WECOM_MARKDOWN_MAX_BYTES, utf8=True)
    return {"msgtype": "markdown", "markdown": {"content": content}}


def wecom_text(alert: Alert, language: Language, link: str, ref: str) -> dict[str, Any]:
    """A group-robot ``text`` body (≤ 2048 UTF-8 bytes)."""
    content = fit(*_plain_parts(alert, language, link, ref), WECOM_TEXT_MAX_BYTES, utf8=True)
    return {"msgtype": "text", "text": {"content": content}}


# --- generic webhook -----------------------------------------------------------------------------


def webhook_payload(alert: Alert, language: Language, link: str, ref: str) -> dict[str, Any]:
    """The generic JSON body: the alert's structured fields plus its rendered title and text."""
    return {
        "ref": ref,
        "digest": False,
        "alerts": [
            {
                **alert.model_dump(mode="json"),
                "title": title(alert, language),
                "text": plain_text(alert, language, link, ref),
                "link": link,
            }
        ],
    }


# --- digests -------------------------------------------------------------------------------------


def digest_lines(alerts: Sequence[Alert], language: Language) -> tuple[str, list[str], list[str]]:
    """Headline, one count line per (event, model) — together they cover every alert — and one
    line per alert (short event id, severity, title)."""
    labels = LABELS[language]
    headline = labels["digest"].format(count=len(alerts))
    counts = Counter((a.kind, a.model) for a in alerts)
    count_lines = [f"{kind} · {model}: {n}" for (kind, model), n in sorted(counts.items())]
    items = [f"[{labels[a.severity]}] {title(a, language)} ({a.event_id[:8]})" for a in alerts]
    return headline, count_lines, items


def _fit_items(items: list[str], budget: int, size: Any, language: Language) -> list[str]:
    """As many item lines as fit ``budget`` (in ``size`` units), then an '… and N more' line."""

    def more(count: int) -> str:
        return LABELS[language]["more"].format(count=count)

    out: list[str] = []
    used = 0
    for i, item in enumerate(items):
        rest = len(items) - i - 1
        # Keep room to say how many were left out, should a later line not fit.
        reserve = size(more(rest)) + 1 if rest else 0
        if used + size(item) + 1 + reserve > budget:
            out.append(more(len(items) - i))
            return out
        out.append(item)
        used += size(item) + 1
    return out


def digest_payload(
    kind: str,
    alerts: Sequence[Alert],
    language: Language,
    registry_url: str,
    ref: str,
    *,
    msgtype: str = "markdown",
) -> dict[str, Any]:
    """One message standing for ``alerts`` on a channel of ``kind`` (slack, wecom, webhook);
    ``msgtype`` chooses WeCom's markdown or text."""
    labels = LABELS[language]
    sep = "：" if language == "zh" else ": "
    headline, count_lines, items = digest_lines(alerts, language)
    correlations = sorted({a.correlation_id for a in alerts if a.correlation_id})
    footer = f"{labels['link']}{sep}{registry_url.rstrip('/')}/models  {labels['ref']}{sep}{ref}"
    if correlations:
        footer = f"{labels['correlation']}{sep}{', '.join(correlations[:3])}\n{footer}"
    if kind == "wecom":
        markdown = msgtype != "text"
        limit = WECOM_MARKDOWN_MAX_BYTES if markdown else WECOM_TEXT_MAX_BYTES
        quote = "> " if markdown else ""
        head = (f"## {headline}\n" if markdown else f"{headline}\n") + "".join(
            f"{quote}{c}\n" for c in count_lines
        )
        tail = f"\n{footer}"
        budget = limit - len((head + tail).encode("utf-8"))
        body = "\n".join(_fit_items(items, budget, lambda s: len(s.encode("utf-8")), language))
        content = truncate_utf8(head + body + tail, limit)
        if markdown:
            return {"msgtype": "markdown", "markdown": {"content": content}}
        return {"msgtype": "text", "text": {"content": content}}
    if kind == "slack":
        counts = truncate_chars("\n".join(count_lines), SLACK_SECTION_MAX_CHARS)
        listed = _fit_items(
            [slack_escape(i) for i in items], SLACK_SECTION_MAX_CHARS, len, language
        )
        text = truncate_chars(f"{headline}\n{counts}\n{footer}", SLACK_TEXT_MAX_CHARS)
        return {
            "text": text,
            "blocks": [
                {
                    "type": "header",
                    "text": {
                        "type": "plain_text",
                        "text": truncate_chars(headline, SLACK_HEADER_MAX_CHARS),
                    },
                },
                {"type": "section", "text": {"type": "mrkdwn", "text": counts}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(listed)}},
                {
                    "type": "context",
                    "elements": [
                        {
                            "type": "mrkdwn",
                            "text": truncate_chars(slack_escape(footer), SLACK_CONTEXT_MAX_CHARS),
                        }
                    ],
                },
            ],
        }
    return {
        "ref": ref,
        "digest": True,
        "alerts": [
            {
                **a.model_dump(mode="json"),
                "title": title(a, language),
                "link": registry_link(registry_url, a),
            }
            for a in alerts
        ],
    }


def single_payload(
    kind: str,
    alert: Alert,
    language: Language,
    registry_url: str,
    ref: str,
    *,
    msgtype: str = "markdown",
) -> dict[str, Any]:
    """One alert as the body of a channel of ``kind`` (``msgtype``: WeCom markdown or text)."""
    link = registry_link(registry_url, alert)
    if kind == "slack":
        return slack_payload(alert, language, link, ref)
    if kind == "wecom":
        if msgtype == "text":
            return wecom_text(alert, language, link, ref)
        return wecom_markdown(alert, language, link, ref)
    return webhook_payload(alert, language, link, ref)
