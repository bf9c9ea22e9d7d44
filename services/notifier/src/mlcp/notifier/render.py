"""Words and payloads: alerts rendered for Slack (Block Kit), WeCom (markdown/text) and webhooks.

Pure functions, English and Chinese. Every payload respects its channel's documented size
limits — WeCom counts UTF-8 bytes (markdown ≤ 4096, text ≤ 2048), Slack counts characters per
block element — and truncation never splits a character. A message that may repeat an earlier
one (its outcome was unknown) carries a visible "↻ possibly repeated" tag with the earlier refs.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
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
MAX_REPEAT_REFS = 3
ELLIPSIS = "…"
REPEAT_MARK = "↻"

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
        "more_groups": "… and {groups} more groups ({count} alerts)",
        "ref": "ref",
        "repeat": "↻ possibly repeated (original ref: {refs})",
        "repeat_some": "↻ possibly repeated: {repeated} of {total} alerts (original ref: {refs})",
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
        "more_groups": "…… 另有 {groups} 组（{count} 条告警）",
        "ref": "编号",
        "repeat": "↻ 可能重复（原编号：{refs}）",
        "repeat_some": "↻ 可能重复：{total} 条中的 {repeated} 条（原编号：{refs}）",
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

Size = Callable[[str], int]
Cut = Callable[[str, int], str]


def utf8_size(text: str) -> int:
    """Size as WeCom counts it: UTF-8 bytes."""
    return len(text.encode("utf-8"))


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


# The end of a cut that stopped inside an entity: "&", "&a", "&am", "&amp", "&l", "&lt" …
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


def truncate_mrkdwn(text: str, max_chars: int, *, marker: str = ELLIPSIS) -> str:
    """Like ``truncate_chars`` for escaped Slack text: never leaves half an ``&amp;``."""
    if len(text) <= max_chars:
        return text
    kept = text[: max(0, max_chars - len(marker))]
    return _PARTIAL_ENTITY.sub("", kept) + marker


def slack_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control sequences, so that
    ``<!channel>``, ``<!here>`` or ``<url|label>`` in event text is shown, never acted on."""
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


def repeat_tag(
    language: Language, refs: Sequence[str], *, repeated: int = 1, total: int = 1
) -> str:
    """The "↻ possibly repeated" line of a message that may repeat the messages ``refs``
    (``repeated`` of its ``total`` alerts may have reached the channel before)."""
    labels = LABELS[language]
    shown = ", ".join(refs[:MAX_REPEAT_REFS])
    if len(refs) > MAX_REPEAT_REFS:
        shown += f" +{len(refs) - MAX_REPEAT_REFS}"
    if repeated >= total:
        return labels["repeat"].format(refs=shown)
    return labels["repeat_some"].format(refs=shown, repeated=repeated, total=total)


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


def _plain_parts(
    alert: Alert, language: Language, link: str, ref: str, tag: str | None = None
) -> tuple[str, str, str]:
    """(repeat tag and title line, details, correlation/link/ref lines) of the plain text."""
    labels = LABELS[language]
    sep = "：" if language == "zh" else ": "
    head = f"[{labels[alert.severity]}] {title(alert, language)}"
    if tag:
        head = f"{tag}\n{head}"
    lines = [f"{k}{sep}{v}" for k, v in fields(alert, language)[3 if alert.version else 2 :]]
    if alert.evidence:
        lines.append(labels["evidence"] + sep)
        lines += [f"  {e}" for e in _evidence_lines(alert, language)]
    tail = [f"{labels['correlation']}{sep}{alert.correlation_id}"] if alert.correlation_id else []
    tail += [f"{labels['link']}{sep}{link}", f"{labels['ref']}{sep}{ref}"]
    return head, "\n".join(lines), "\n".join(tail)


def fit(head: str, body: str, tail: str, limit: int, *, utf8: bool, cut: Cut | None = None) -> str:
    """``head``, ``body``, ``tail`` on separate lines within ``limit`` (bytes if ``utf8``, else
    characters): the body is cut so that the title and the link/ref lines always survive.
    ``cut`` replaces the default truncation (e.g. ``truncate_mrkdwn`` for escaped Slack text)."""
    size: Size = utf8_size if utf8 else len
    cut = cut or (truncate_utf8 if utf8 else truncate_chars)
    head = cut(head, limit // 4)
    tail = cut(tail, limit // 2)
    if not body:
        return f"{head}\n{tail}"
    room = limit - size(head) - size(tail) - 2
    return f"{head}\n{cut(body, max(room, 0))}\n{tail}" if room > 1 else f"{head}\n{tail}"


def plain_text(
    alert: Alert, language: Language, link: str, ref: str, tag: str | None = None
) -> str:
    """The whole alert as plain text (the webhook's ``text``)."""
    return "\n".join(p for p in _plain_parts(alert, language, link, ref, tag) if p)


# --- Slack ---------------------------------------------------------------------------------------


def _slack_context(text: str) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": truncate_mrkdwn(text, SLACK_CONTEXT_MAX_CHARS)}],
    }


def slack_text(head: str, body: str, tail: str) -> str:
    """Slack's notification fallback ``text``: escaped like the blocks (Slack parses it for
    ``<!channel>``, ``<!here>`` and ``<url|label>`` too) and cut without breaking an entity."""
    return fit(
        slack_escape(head),
        slack_escape(body),
        slack_escape(tail),
        SLACK_TEXT_MAX_CHARS,
        utf8=False,
        cut=truncate_mrkdwn,
    )


def slack_payload(
    alert: Alert, language: Language, link: str, ref: str, tag: str | None = None
) -> dict[str, Any]:
    """An incoming-webhook body: Block Kit blocks plus the ``text`` fallback for notifications;
    ``tag`` (a possible repeat) comes first in both."""
    labels = LABELS[language]
    blocks: list[dict[str, Any]] = [_slack_context(slack_escape(tag))] if tag else []
    blocks += [
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
                    "text": truncate_mrkdwn(
                        f"*{slack_escape(k)}*\n{slack_escape(v)}", SLACK_FIELD_MAX_CHARS
                    ),
                }
                for k, v in fields(alert, language)[:SLACK_MAX_FIELDS]
            ],
        },
    ]
    if alert.evidence:
        body = f"*{slack_escape(labels['evidence'])}*\n" + "\n".join(
            slack_escape(line) for line in _evidence_lines(alert, language)
        )
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": truncate_mrkdwn(body, SLACK_SECTION_MAX_CHARS)},
            }
        )
    # The link is ours (registry URL + model slug): the one place where <url|label> is meant.
    context = f"{SLACK_EMOJI[alert.severity]} <{link}|{slack_escape(labels['link'])}>"
    if alert.correlation_id:
        context += f" · {labels['correlation']}: `{slack_escape(alert.correlation_id)}`"
    context += f" · {labels['ref']}: `{ref}`"
    blocks.append(_slack_context(context))
    fallback = slack_text(*_plain_parts(alert, language, link, ref, tag))
    return {"text": fallback, "blocks": blocks}


# --- WeCom ---------------------------------------------------------------------------------------


def wecom_markdown(
    alert: Alert, language: Language, link: str, ref: str, tag: str | None = None
) -> dict[str, Any]:
    """A group-robot ``markdown`` body (≤ 4096 UTF-8 bytes); ``tag`` is its first line."""
    labels = LABELS[language]
    sep = "：" if language == "zh" else ": "
    color = WECOM_COLOR[alert.severity]
    head = f"## {title(alert, language)}"
    if tag:
        head = f'<font color="warning">{tag}</font>\n{head}'
    lines = []
    for k, v in fields(alert, language):
        value = f'<font color="{color}">{v}</font>' if k == labels["severity"] else v
        lines.append(f"> {k}{sep}{value}")
    if alert.evidence:
        lines.append(f"**{labels['evidence']}**")
        lines += [f"> {e}" for e in _evidence_lines(alert, language)]
    tail = f"[{labels['link']}]({link})  {labels['ref']}{sep}{ref}"
    if alert.correlation_id:
        tail = f"{labels['correlation']}{sep}`{alert.correlation_id}`\n{tail}"
    content = fit(head, "\n".join(lines), tail, WECOM_MARKDOWN_MAX_BYTES, utf8=True)
    return {"msgtype": "markdown", "markdown": {"content": content}}


def wecom_text(
    alert: Alert, language: Language, link: str, ref: str, tag: str | None = None
) -> dict[str, Any]:
    """A group-robot ``text`` body (≤ 2048 UTF-8 bytes); ``tag`` is its first line."""
    parts = _plain_parts(alert, language, link, ref, tag)
    content = fit(*parts, WECOM_TEXT_MAX_BYTES, utf8=True)
    return {"msgtype": "text", "text": {"content": content}}


# --- generic webhook -----------------------------------------------------------------------------


def webhook_payload(
    alert: Alert,
    language: Language,
    link: str,
    ref: str,
    repeat_of: Sequence[str] = (),
) -> dict[str, Any]:
    """The generic JSON body: the alert's structured fields plus its rendered title and text;
    ``repeat_of`` lists the refs of earlier messages that may already have carried it."""
    tag = repeat_tag(language, repeat_of) if repeat_of else None
    return {
        "ref": ref,
        "digest": False,
        "possible_repeat": bool(repeat_of),
        "repeat_of": list(repeat_of),
        "alerts": [
            {
                **alert.model_dump(mode="json"),
                "title": title(alert, language),
                "text": plain_text(alert, language, link, ref, tag),
                "link": link,
                "repeat_of": list(repeat_of),
            }
        ],
    }


# --- digests -------------------------------------------------------------------------------------


def digest_lines(
    alerts: Sequence[Alert], language: Language, repeated: frozenset[str] = frozenset()
) -> tuple[str, list[tuple[str, int]], list[str]]:
    """Headline; one (count line, count) per (event, model) — together they cover every alert;
    one line per alert (short event id, severity, title; ``↻`` if it may be a repeat)."""
    labels = LABELS[language]
    headline = labels["digest"].format(count=len(alerts))
    counts = Counter((a.kind, a.model) for a in alerts)
    count_lines = [(f"{kind} · {model}: {n}", n) for (kind, model), n in sorted(counts.items())]
    items = [
        f"{REPEAT_MARK + ' ' if a.event_id in repeated else ''}[{labels[a.severity]}] "
        f"{title(a, language)} ({a.event_id[:8]})"
        for a in alerts
    ]
    return headline, count_lines, items


def _fit_items(items: list[str], budget: int, size: Size, language: Language) -> list[str]:
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


def _fit_counts(
    lines: list[tuple[str, int]], budget: int, size: Size, language: Language, prefix: str = ""
) -> list[str]:
    """As many count lines as fit ``budget``, then '… and G more groups (N alerts)': the lines
    shown plus that one still add up to every alert of the digest."""

    def more(rest: list[tuple[str, int]]) -> str:
        count = sum(n for _, n in rest)
        return prefix + LABELS[language]["more_groups"].format(groups=len(rest), count=count)

    out: list[str] = []
    used = 0
    for i, (line, _) in enumerate(lines):
        rest = lines[i + 1 :]
        reserve = size(more(rest)) + 1 if rest else 0
        if used + size(prefix + line) + 1 + reserve > budget:
            out.append(more(lines[i:]))
            return out
        out.append(prefix + line)
        used += size(prefix + line) + 1
    return out


def _digest_body(
    count_lines: list[tuple[str, int]],
    items: list[str],
    budget: int,
    size: Size,
    language: Language,
    prefix: str = "",
) -> str:
    """Count lines, then item lines, within ``budget``: the count lines are shortened before
    anything else is lost, the items get what is left (at least their '… and N more' line)."""
    item_reserve = size(LABELS[language]["more"].format(count=len(items))) + 1
    counts = _fit_counts(count_lines, budget - item_reserve, size, language, prefix)
    left = budget - sum(size(line) + 1 for line in counts)
    return "\n".join(counts + _fit_items(items, left, size, language))


def _unique_refs(repeats: Mapping[str, Sequence[str]], alerts: Sequence[Alert]) -> list[str]:
    refs: list[str] = []
    for alert in alerts:
        refs += [r for r in repeats.get(alert.event_id, ()) if r not in refs]
    return refs


def digest_payload(
    kind: str,
    alerts: Sequence[Alert],
    language: Language,
    registry_url: str,
    ref: str,
    *,
    msgtype: str = "markdown",
    repeats: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """One message standing for ``alerts`` on a channel of ``kind`` (slack, wecom, webhook);
    ``msgtype`` chooses WeCom's markdown or text. ``repeats`` maps the event id of each alert
    that may already have reached the channel to the refs of the messages that may have carried
    it: the digest is then tagged "↻ possibly repeated". The headline, the tag and the
    ref/link footer always fit; count lines are shortened before them."""
    labels = LABELS[language]
    repeats = {k: v for k, v in (repeats or {}).items() if v}
    sep = "：" if language == "zh" else ": "
    repeated = frozenset(a.event_id for a in alerts if a.event_id in repeats)
    refs = _unique_refs(repeats, alerts)
    tag = (
        repeat_tag(language, refs, repeated=len(repeated), total=len(alerts)) if repeated else None
    )
    headline, count_lines, items = digest_lines(alerts, language, repeated)
    correlations = sorted({a.correlation_id for a in alerts if a.correlation_id})
    footer = f"{labels['link']}{sep}{registry_url.rstrip('/')}/models  {labels['ref']}{sep}{ref}"
    if correlations:
        footer = f"{labels['correlation']}{sep}{', '.join(correlations[:3])}\n{footer}"
    if kind == "wecom":
        markdown = msgtype != "text"
        limit = WECOM_MARKDOWN_MAX_BYTES if markdown else WECOM_TEXT_MAX_BYTES
        head = f"## {headline}" if markdown else headline
        if tag:
            head = f'<font color="warning">{tag}</font>\n{head}' if markdown else f"{tag}\n{head}"
        head, footer = truncate_utf8(head, limit // 4), truncate_utf8(footer, limit // 2)
        budget = limit - utf8_size(head) - utf8_size(footer) - 2
        quote = "> " if markdown else ""
        body = _digest_body(count_lines, items, budget, utf8_size, language, quote)
        # fit() only guards the limit here: the body was sized to leave head and footer whole.
        content = fit(head, body, footer, limit, utf8=True)
        if markdown:
            return {"msgtype": "markdown", "markdown": {"content": content}}
        return {"msgtype": "text", "text": {"content": content}}
    if kind == "slack":
        escaped = [(slack_escape(line), n) for line, n in count_lines]
        counts = "\n".join(_fit_counts(escaped, SLACK_SECTION_MAX_CHARS, len, language))
        listed = _fit_items(
            [slack_escape(i) for i in items], SLACK_SECTION_MAX_CHARS, len, language
        )
        head = f"{tag}\n{headline}" if tag else headline
        text_head, text_footer = slack_escape(head), slack_escape(footer)
        text_budget = SLACK_TEXT_MAX_CHARS - len(text_head) - len(text_footer) - 2
        text_counts = "\n".join(_fit_counts(escaped, text_budget, len, language))
        blocks: list[dict[str, Any]] = [_slack_context(slack_escape(tag))] if tag else []
        blocks += [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": truncate_chars(headline, SLACK_HEADER_MAX_CHARS),
                },
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": counts}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(listed)}},
            _slack_context(text_footer),
        ]
        text = fit(
            text_head,
            text_counts,
            text_footer,
            SLACK_TEXT_MAX_CHARS,
            utf8=False,
            cut=truncate_mrkdwn,
        )
        return {"text": text, "blocks": blocks}
    return {
        "ref": ref,
        "digest": True,
        "possible_repeat": bool(repeated),
        "repeat_of": refs,
        "alerts": [
            {
                **a.model_dump(mode="json"),
                "title": title(a, language),
                "link": registry_link(registry_url, a),
                "repeat_of": list(repeats.get(a.event_id, ())),
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
    repeat_of: Sequence[str] = (),
) -> dict[str, Any]:
    """One alert as the body of a channel of ``kind`` (``msgtype``: WeCom markdown or text).
    ``repeat_of``: refs of earlier messages that may already have carried this alert; the
    message is then tagged "↻ possibly repeated" with them."""
    link = registry_link(registry_url, alert)
    tag = repeat_tag(language, repeat_of) if repeat_of else None
    if kind == "slack":
        return slack_payload(alert, language, link, ref, tag)
    if kind == "wecom":
        if msgtype == "text":
            return wecom_text(alert, language, link, ref, tag)
        return wecom_markdown(alert, language, link, ref, tag)
    return webhook_payload(alert, language, link, ref, repeat_of)
