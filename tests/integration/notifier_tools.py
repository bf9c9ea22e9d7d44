"""Helpers for the notifier's tests against real Kafka, PostgreSQL and a real local HTTP sink:
the two-channel configuration, publishing events, starting a ``python -m mlcp.notifier``
process, and accounting for what the sink received against the delivery log (delivered once,
repeated and marked, repeated without a mark, lost)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from mlcp.contracts import CloudEvent, encode_event
from tests.conftest import Infra, free_port, wait_for
from tests.integration.kafka_tools import produce

REGISTRY = "http://registry.test:8081"
SLACK_PATH = "/slack/T0/B0/secret-slack-token"
WECOM_PATH = "/wecom/send"
WECOM_KEY = "wecom-secret-key-1234"
PATHS = {"team-slack": SLACK_PATH, "ops-wecom": WECOM_PATH}

CONFIG = """
notifications:
  channels:
    team-slack: {kind: slack, url_env: T_SLACK_URL%(slack_rate)s}
    ops-wecom:  {kind: wecom, url_env: T_WECOM_URL, language: zh%(wecom_rate)s}
  routes:
    - {events: [gate.failed, model.rolled_back, drift.detected, run.failed],
       channels: [team-slack, ops-wecom]}
    - {events: [approval.requested, model.promoted], channels: [team-slack]}
"""


def write_config(
    tmp_path: Path, slack_rate: float | None = None, wecom_rate: float | None = None
) -> Path:
    """The Slack + WeCom configuration, with rates other than the defaults if given."""
    path = tmp_path / "mlcp.yaml"
    path.write_text(
        CONFIG
        % {
            "slack_rate": f", rate_per_minute: {slack_rate}" if slack_rate else "",
            "wecom_rate": f", rate_per_minute: {wecom_rate}" if wecom_rate else "",
        }
    )
    return path


def channel_env(base: str) -> dict[str, str]:
    """The channels' webhook variables, pointing at a sink served at ``base``."""
    return {
        "T_SLACK_URL": f"{base}{SLACK_PATH}",
        "T_WECOM_URL": f"{base}{WECOM_PATH}?key={WECOM_KEY}",
    }


async def publish(infra: Infra, unique: str, events: list[CloudEvent[Any]]) -> None:
    """Produce ``events`` (all of one type) on the test's topic of that type, as the admin
    (the events carry their owner's ``source``, which the notifier's consumer checks)."""
    topic = f"t{unique}.{events[0].type}"
    await produce(
        infra.admin,
        topic,
        [(e.subject.encode() if e.subject else None, encode_event(e), []) for e in events],
    )


async def query(infra: Infra, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(infra.database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def all_settled(infra: Infra, schema: str, expected: int) -> bool:
    """Every one of ``expected`` deliveries is delivered (nothing is given up or left open)."""
    rows = await query(
        infra, f"SELECT state, count(*) AS n FROM {schema}.deliveries GROUP BY state"
    )
    states = {r["state"]: r["n"] for r in rows}
    return states == {"delivered": expected}


async def delivery_rows(infra: Infra, schema: str) -> list[asyncpg.Record]:
    """What ``tally`` needs of the delivery log."""
    return await query(
        infra,
        f"SELECT event_id, channel, state, message_id, uncertain_refs FROM {schema}.deliveries",
    )


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The refs named by a "↻ possibly repeated" tag (render.repeat_tag), English or Chinese.
TAG_REFS = re.compile(rf"(?:original ref: |原编号：)((?:{UUID.pattern})(?:, {UUID.pattern})*)")
REPEAT_MARK = "↻"


def notifier_env(infra: Infra, unique: str, config: Path, **extra: str) -> dict[str, str]:
    """The environment of a notifier process (as ``svc-notifier``) on the test's topics,
    prepared with their ACLs, and schema."""
    return {
        **infra.env("svc-notifier", prefix=f"t{unique}."),
        "MLCP_DB_SCHEMA": f"notifier_{unique}",
        "MLCP_CONFIG": str(config),
        "MLCP_REGISTRY_URL": REGISTRY,
        "MLCP_LOG_FORMAT": "text",
        "MLCP_CONSUMER_SESSION_TIMEOUT_MS": "6000",
        **extra,
    }


def start_notifier(spawn: Callable[..., Any], env: dict[str, str]) -> tuple[Any, int]:
    """Start ``python -m mlcp.notifier``; returns the process and its HTTP port."""
    port = free_port()
    return spawn(["-m", "mlcp.notifier"], {**env, "MLCP_HTTP_PORT": str(port)}, "notifier"), port


async def wait_notifier_ready(proc: Any, port: int, timeout: float = 90) -> None:
    """Until the notifier answers /readyz (a loaded 2-core machine starts slowly)."""

    async def ready() -> bool:
        assert proc.popen.poll() is None, proc.output()
        try:
            async with httpx.AsyncClient() as client:
                answer = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                return answer.status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(ready, timeout=timeout, what="notifier /readyz")


@dataclass(frozen=True)
class Copy:
    """One message as the sink received it."""

    ref: str
    marked: bool
    """It carried the "↻ possibly repeated" tag."""
    earlier: tuple[str, ...]
    """The refs its tag names (messages that may already have carried its alerts)."""
    time: float
    path: str


def body_text(request: Mapping[str, Any]) -> str:
    """A recorded request's body as text (JSON re-serialised without escapes)."""
    return json.dumps(request.get("json", request.get("text")), ensure_ascii=False)


def parse_copy(request: Mapping[str, Any], known: set[str]) -> Copy:
    """The message's own ref (one of the ``known`` message ids: correlation ids may be UUIDs
    too) and its repeat tag, from any channel's body."""
    text = body_text(request)
    body = request.get("json")
    if isinstance(body, dict) and "ref" in body and "alerts" in body:  # the generic webhook
        own = {body["ref"]}
        earlier = tuple(body["repeat_of"])
        marked = bool(body["possible_repeat"])
    else:
        # dict.fromkeys: Slack shows the tag twice (a block and the notification text).
        earlier = tuple(
            dict.fromkeys(r for m in TAG_REFS.finditer(text) for r in UUID.findall(m.group(1)))
        )
        own = (set(UUID.findall(text)) - set(earlier)) & known
        marked = REPEAT_MARK in text
    if len(own) != 1:
        raise ValueError(f"a message names exactly one ref of its own, not {own}: {text[:300]}")
    return Copy(own.pop(), marked, earlier, float(request["time"]), request["path"])


CATEGORIES = (
    "delivered once",
    "delivered once, marked (the earlier send never arrived)",
    "repeated, marked",
    "repeated, NOT marked",
    "lost",
)


@dataclass
class Tally:
    """Per (alert, channel): how many copies reached the sink and whether repeats were marked."""

    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    deliveries: int = 0

    @property
    def lost(self) -> int:
        return self.counts["lost"]

    @property
    def unmarked_repeats(self) -> int:
        return self.counts["repeated, NOT marked"]

    def render(self) -> str:
        """The counts as a small table."""
        width = max(len(c) for c in CATEGORIES)
        lines = [f"{'deliveries (alert × channel)':<{width}}  {self.deliveries:>6}"]
        lines += [f"{c:<{width}}  {self.counts[c]:>6}" for c in CATEGORIES]
        return "\n".join(lines)


def tally(
    requests: Iterable[Mapping[str, Any]],
    rows: Iterable[asyncpg.Record | Mapping[str, Any]],
    paths: Mapping[str, str],
) -> Tally:
    """Account for every delivery row (event_id, channel, state, message_id, uncertain_refs)
    against the messages the sink received on its channel's path (``paths``: channel → its
    path, or a part of it). A row's messages are its final ``message_id`` and its
    ``uncertain_refs``. Never raises: what does not add up is in ``problems``."""
    rows = list(rows)
    known = {str(r["message_id"]) for r in rows} | {
        str(ref) for r in rows for ref in r["uncertain_refs"]
    }
    result = Tally()
    copies: dict[str, list[Copy]] = {}
    for request in requests:
        try:
            copy = parse_copy(request, known)
        except ValueError as exc:
            result.problems.append(f"{request['path']}: {exc}")
            continue
        copies.setdefault(copy.ref, []).append(copy)
    for ref, same in copies.items():
        if len(same) > 1:
            result.problems.append(f"message {ref} reached the sink {len(same)} times")
    for row in rows:
        result.deliveries += 1
        refs = {str(row["message_id"])} | {str(r) for r in row["uncertain_refs"]}
        got = sorted((c for r in refs for c in copies.get(r, [])), key=lambda c: c.time)
        if any(paths[row["channel"]] not in c.path for c in got):
            result.problems.append(f"{row['event_id']} → {row['channel']} reached another path")
        if row["state"] != "delivered" or not got:
            result.counts["lost"] += 1
        elif len(got) == 1 and row["uncertain_refs"]:
            # Sent again after an uncertainty, but the earlier message never arrived.
            result.counts["delivered once, marked (the earlier send never arrived)"] += 1
            if not got[0].marked:
                result.problems.append(f"{row['event_id']} → {row['channel']}: repeat unmarked")
        elif len(got) == 1:
            # (Its message may carry the tag for other alerts of a digest: it is not a repeat.)
            result.counts["delivered once"] += 1
        elif all(c.marked for c in got[1:]):
            result.counts["repeated, marked"] += 1
        else:
            result.counts["repeated, NOT marked"] += 1
        if len(got) > 1 + len(row["uncertain_refs"]):
            result.problems.append(
                f"{row['event_id']} → {row['channel']}: {len(got)} copies for "
                f"{len(row['uncertain_refs'])} uncertainties (at most one repeat each)"
            )
    return result
