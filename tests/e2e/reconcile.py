"""After a run: does every service's PostgreSQL state agree with the bus and with each other?

``reconcile`` reads each service's schema and every topic of the run and returns a ``Report``:
figures (what was counted) and problems (each a line of the diff). Checks:

* trainer: every DataArrived sent is in the ledger exactly once; one TrainingRequested per
  (model, reason) fact; one RunFinished per run;
* registry: one version per run id and a version for every RunFinished; the aliases equal the
  replay of the alias history AND the replay of the audit log's promotion/rollback rows; the
  audit hash chain verifies; every alias move is one ModelPromoted / ModelRolledBack on the bus;
* every service: the distinct event ids on its topics are exactly its outbox rows, and no outbox
  row is left unpublished; no business fact was emitted twice under two ids;
* notifier: one alert per alert-worthy event, one delivery per (alert, routed channel), every
  delivery ``delivered`` and received by the sink; none lost, and an alert received twice only
  when the later message is tagged "↻ possibly repeated" (at most once per uncertainty);
* no dead-letter record except the ones the test provoked.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from mlcp.contracts import decode_event
from mlcp.registry.audit import verify_chain
from mlcp.registry.chain import Checkpoint, checkpoint_is_authentic
from mlcp.registry.keys import AuditSettings, load_keyring
from tests.e2e.stack import Bus
from tests.integration.notifier_tools import tally

# Who emits what (the README's event catalog): each topic's records are exactly its owner's outbox.
PRODUCERS = {
    "trainer": [
        "mlcp.training.requested.v1",
        "mlcp.run.started.v1",
        "mlcp.run.finished.v1",
        "mlcp.run.failed.v1",
    ],
    "registry": [
        "mlcp.model.registered.v1",
        "mlcp.model.promoted.v1",
        "mlcp.model.rolled_back.v1",
        "mlcp.audit.checkpointed.v1",
    ],
    "gatekeeper": [
        "mlcp.gate.check_passed.v1",
        "mlcp.gate.failed.v1",
        "mlcp.gate.passed.v1",
        "mlcp.approval.requested.v1",
    ],
    "monitor": ["mlcp.drift.detected.v1", "mlcp.model.degraded.v1", "mlcp.canary.healthy.v1"],
}

# The notifier's routes in the test's config: event type → channels.
ALERT_ROUTES = {
    "mlcp.gate.failed.v1": ("team-slack", "ops-wecom"),
    "mlcp.model.rolled_back.v1": ("team-slack", "ops-wecom"),
    "mlcp.drift.detected.v1": ("team-slack", "ops-wecom"),
    "mlcp.run.failed.v1": ("team-slack", "ops-wecom"),
    "mlcp.approval.requested.v1": ("team-slack",),
    "mlcp.model.promoted.v1": ("team-slack",),
}
CHANNEL_PATHS = {"team-slack": "/slack/", "ops-wecom": "/wecom/"}


# The business fact each event states: two distinct event ids with one key = applied twice.
FACTS: dict[str, Callable[[Any], tuple[Any, ...] | None]] = {
    "mlcp.training.requested.v1": lambda d: (
        (d.model, tuple(sorted(d.trigger_event_ids))) if d.reason == "data_threshold" else None
    ),
    "mlcp.run.started.v1": lambda d: (d.run_id,),
    "mlcp.run.finished.v1": lambda d: (d.run_id,),
    "mlcp.model.registered.v1": lambda d: (d.model, d.run_id),
    "mlcp.gate.passed.v1": lambda d: (d.model, d.version),
    "mlcp.canary.healthy.v1": lambda d: (d.model, d.version),
    "mlcp.model.degraded.v1": lambda d: (d.model, d.version, d.alias),
    "mlcp.audit.checkpointed.v1": lambda d: (d.chain, d.seq),  # one signed head per audit row
}


@dataclass
class Report:
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def problem(self, line: str) -> None:
        self.problems.append(line)

    def render(self) -> str:
        lines = ["reconciliation figures:"]
        lines += [f"  {k}: {v}" for k, v in self.figures.items()]
        if self.problems:
            lines.append(f"reconciliation diff ({len(self.problems)} problems):")
            lines += [f"  - {p}" for p in self.problems]
        else:
            lines.append("reconciliation: no difference")
        return "\n".join(lines)


@dataclass
class Expectations:
    """What the test put in, and the faults it caused."""

    batches: list[tuple[str, str]]  # (dataset, batch_id) of every DataArrived sent
    provoked_dlq: dict[str, int]  # topic (without prefix) → records the test poisoned on purpose
    notifier_kills: list[float]  # wall-clock times of the notifier's SIGKILLs
    sink_requests: list[dict[str, Any]]


def _decoded(records: Iterable[Any], event_type: str) -> dict[str, Any]:
    """Distinct events of a topic by CloudEvents id (a re-published outbox row is one event)."""
    out: dict[str, Any] = {}
    for record in records:
        event = decode_event(record.value, expected_type=event_type)
        out.setdefault(event.id, event)
    return out


async def reconcile(
    database_url: str, schemas: dict[str, str], bus: Bus, expect: Expectations
) -> Report:
    report = Report()
    conn = await asyncpg.connect(database_url)
    try:
        events: dict[str, dict[str, Any]] = {}
        for service, types in PRODUCERS.items():
            for event_type in types:
                records = await bus.read(bus.topic(event_type))
                events[event_type] = _decoded(records, event_type)
                report.figures[f"bus {event_type}"] = (
                    f"{len(records)} records, {len(events[event_type])} distinct ids"
                )
                await _outbox_matches_topic(conn, report, schemas[service], bus, event_type, events)
        for service, schema in schemas.items():
            left = await conn.fetchval(
                f"SELECT count(*) FROM {schema}.mlcp_outbox WHERE published_at IS NULL"
            )
            if left:
                report.problem(f"{service}: {left} outbox rows never published")
        _no_fact_twice(report, events)
        await _trainer(conn, report, schemas["trainer"], expect, events)
        await _registry(conn, report, schemas["registry"], events)
        await _notifier(conn, report, schemas["notifier"], expect, events)
        await _dead_letters(report, bus, expect)
    finally:
        await conn.close()
    return report


async def _outbox_matches_topic(
    conn: asyncpg.Connection,
    report: Report,
    schema: str,
    bus: Bus,
    event_type: str,
    events: dict[str, dict[str, Any]],
) -> None:
    rows = await conn.fetch(
        f"SELECT event_id FROM {schema}.mlcp_outbox WHERE topic = $1", bus.topic(event_type)
    )
    outbox = {r["event_id"] for r in rows}
    on_bus = set(events[event_type])
    if missing := sorted(outbox - on_bus):
        report.problem(f"{event_type}: {len(missing)} outbox rows not on the bus: {missing[:5]}")
    if stray := sorted(on_bus - outbox):
        report.problem(
            f"{event_type}: {len(stray)} events on the bus, not in the outbox: {stray[:5]}"
        )


def _no_fact_twice(report: Report, events: dict[str, dict[str, Any]]) -> None:
    facts: Counter[tuple[Any, ...]] = Counter()
    for event_type, by_id in events.items():
        for event in by_id.values():
            fact = FACTS.get(event_type)
            if fact is not None and (key := fact(event.data)) is not None:
                facts[(event_type, *key)] += 1
    twice = {k: n for k, n in facts.items() if n > 1}
    report.figures["facts checked for double application"] = len(facts)
    for key, n in sorted(twice.items(), key=str):
        report.problem(f"the fact {key} was emitted {n} times under distinct event ids")


async def _trainer(
    conn: asyncpg.Connection,
    report: Report,
    schema: str,
    expect: Expectations,
    events: dict[str, dict[str, Any]],
) -> None:
    rows = await conn.fetch(f"SELECT dataset, batch_id, rows FROM {schema}.ledger")
    ledger = Counter((r["dataset"], r["batch_id"]) for r in rows)
    sent = Counter(expect.batches)
    report.figures["DataArrived sent / in the ledger"] = f"{sum(sent.values())} / {len(rows)}"
    for key in sorted(set(sent) | set(ledger)):
        if ledger[key] != 1:
            report.problem(f"batch {key}: {ledger[key]} ledger rows (sent {sent[key]} times)")
    heads = await conn.fetch(f"SELECT dataset, last_seq, total_rows FROM {schema}.datasets")
    for head in heads:
        count = sum(1 for r in rows if r["dataset"] == head["dataset"])
        total = sum(r["rows"] for r in rows if r["dataset"] == head["dataset"])
        if (head["last_seq"], head["total_rows"]) != (count, total):
            report.problem(
                f"dataset {head['dataset']}: head says {head['last_seq']} batches / "
                f"{head['total_rows']} rows, the ledger holds {count} / {total}"
            )
    runs = await conn.fetch(f"SELECT run_id, status, attempt FROM {schema}.runs")
    statuses = Counter(r["status"] for r in runs)
    report.figures["trainer runs by status"] = dict(statuses)
    report.figures["trainer runs claimed more than once"] = sum(1 for r in runs if r["attempt"] > 1)
    finished = {e.data.run_id for e in events["mlcp.run.finished.v1"].values()}
    done = {r["run_id"] for r in runs if r["status"] == "finished"}
    if finished != done:
        report.problem(f"runs finished in the trainer {sorted(done)} != RunFinished {finished}")
    if open_runs := [r["run_id"] for r in runs if r["status"] in ("queued", "running")]:
        report.problem(f"runs still open: {open_runs}")


def _replay(moves: Iterable[tuple[str, str, str | None]]) -> dict[tuple[str, str], str]:
    aliases: dict[tuple[str, str], str] = {}
    for model, alias, version in moves:
        if version is None:
            aliases.pop((model, alias), None)
        else:
            aliases[(model, alias)] = version
    return aliases


async def _registry(
    conn: asyncpg.Connection, report: Report, schema: str, events: dict[str, dict[str, Any]]
) -> None:
    versions = await conn.fetch(f"SELECT model, version, run_id, status FROM {schema}.versions")
    per_run = Counter((v["model"], v["run_id"]) for v in versions)
    report.figures["registered versions"] = len(versions)
    for key, n in per_run.items():
        if n != 1:
            report.problem(f"run {key} has {n} versions")
    finished = {(e.data.model, e.data.run_id) for e in events["mlcp.run.finished.v1"].values()}
    if missing := finished - set(per_run):
        report.problem(f"RunFinished never registered: {sorted(missing)}")
    if extra := set(per_run) - finished:
        report.problem(f"versions without a RunFinished: {sorted(extra)}")

    current = {
        (r["model"], r["alias"]): r["version"]
        for r in await conn.fetch(f"SELECT model, alias, version FROM {schema}.aliases")
    }
    history = await conn.fetch(
        f"SELECT model, alias, version, previous_version FROM {schema}.alias_history ORDER BY id"
    )
    from_history = _replay((h["model"], h["alias"], h["version"]) for h in history)
    audit = await conn.fetch(f"SELECT * FROM {schema}.audit_log ORDER BY seq")
    moves = []
    # What the registry announces for each audited move (handlers.apply): a promotion names the
    # version that now holds the alias, a rollback the version taken out. A canary removed because
    # it became production is audited but not announced.
    expected: Counter[tuple[Any, ...]] = Counter()
    for row in audit:
        if row["action"] in ("promotion", "rollback"):
            after = json.loads(row["after"])
            (move,) = [m for m in after["moves"] if m["alias"] == after["alias"]]
            moves.append((row["model"], move["alias"], move["version"]))
            named = move["version"] if row["action"] == "promotion" else move["previous_version"]
            if named is not None:
                expected[
                    (row["model"], move["alias"], move["version"], move["previous_version"])
                ] += 1
    from_audit = _replay(moves)
    report.figures["alias moves (history / audit)"] = f"{len(history)} / {len(moves)}"
    report.figures["aliases now"] = len(current)
    if from_history != current:
        report.problem(f"alias history replay {from_history} != aliases {current}")
    if from_audit != current:
        report.problem(f"audit log replay {from_audit} != aliases {current}")
    rollouts = await conn.fetch(f"SELECT model, canary, production FROM {schema}.rollouts")
    for r in rollouts:
        for alias in ("canary", "production"):
            if r[alias] != current.get((r["model"], alias)):
                report.problem(
                    f"rollout of {r['model']}: {alias}={r[alias]} but the alias says "
                    f"{current.get((r['model'], alias))}"
                )
    # The keyed chain against every signed checkpoint the registry put on the bus.
    keyring = load_keyring(AuditSettings())
    checkpoints = [
        Checkpoint(d.chain, d.seq, d.hash, d.key_id, d.signed_at, d.signature)
        for d in (e.data for e in events["mlcp.audit.checkpointed.v1"].values())
        if d.chain == schema
    ]
    if forged := [c.seq for c in checkpoints if not checkpoint_is_authentic(c, keyring)]:
        report.problem(f"checkpoints not signed by the registry's key: rows {forged[:5]}")
    async with conn.transaction():
        await conn.execute(f"SET LOCAL search_path TO {schema}")
        verdict = await verify_chain(conn, keyring, checkpoints)
    report.figures["audit chain"] = verdict.as_dict()
    if not verdict.ok or verdict.unanchored_rows:
        report.problem(f"audit chain broken or not all checkpointed: {verdict.as_dict()}")

    # Every audited alias move is announced exactly once on the bus, and nothing else is.
    announced: Counter[tuple[Any, ...]] = Counter()
    for e in events["mlcp.model.promoted.v1"].values():
        announced[(e.data.model, e.data.alias, e.data.version, e.data.previous_version)] += 1
    for e in events["mlcp.model.rolled_back.v1"].values():
        announced[(e.data.model, e.data.alias, e.data.to_version, e.data.from_version)] += 1
    if announced != expected:
        report.problem(
            f"alias moves on the bus != audit log: only on the bus {announced - expected}, "
            f"only in the audit log {expected - announced}"
        )


async def _notifier(
    conn: asyncpg.Connection,
    report: Report,
    schema: str,
    expect: Expectations,
    events: dict[str, dict[str, Any]],
) -> None:
    wanted: dict[str, tuple[str, ...]] = {}
    for event_type, channels in ALERT_ROUTES.items():
        for event_id in events.get(event_type, {}):
            wanted[event_id] = channels
    alerts = {r["event_id"] for r in await conn.fetch(f"SELECT event_id FROM {schema}.alerts")}
    report.figures["alert-worthy events / alerts recorded"] = f"{len(wanted)} / {len(alerts)}"
    if missing := sorted(set(wanted) - alerts):
        report.problem(f"{len(missing)} alert-worthy events without an alert: {missing[:5]}")
    if extra := alerts - set(wanted):
        report.problem(f"{len(extra)} alerts for events not on the bus: {sorted(extra)[:5]}")

    rows = await conn.fetch(
        f"SELECT event_id, channel, state, message_id, uncertain_refs FROM {schema}.deliveries"
    )
    have = Counter((r["event_id"], r["channel"]) for r in rows)
    for event_id, channels in wanted.items():
        for channel in channels:
            if have[(event_id, channel)] != 1:
                report.problem(f"alert {event_id} → {channel}: {have[(event_id, channel)]} rows")
    states = Counter((r["channel"], r["state"]) for r in rows)
    report.figures["deliveries by channel and state"] = dict(sorted(states.items()))
    if bad := [r for r in rows if r["state"] != "delivered"]:
        report.problem(f"{len(bad)} deliveries not delivered: {bad[:3]}")

    # What the sink received, mapped to the delivery log through the refs each message carries
    # (its own, and those its "possibly repeated" tag names).
    counts = tally(expect.sink_requests, rows, CHANNEL_PATHS)
    report.figures["messages received by the sink"] = len(expect.sink_requests)
    report.figures["deliveries at the sink"] = dict(counts.counts)
    report.figures["uncertainties (sent again, tagged) / notifier kills"] = (
        f"{sum(len(r['uncertain_refs']) for r in rows)} / {len(expect.notifier_kills)}"
    )
    for problem in counts.problems[:10]:
        report.problem(problem)
    if counts.lost:
        report.problem(f"{counts.lost} deliveries never reached the sink")
    if counts.unmarked_repeats:
        report.problem(f"{counts.unmarked_repeats} deliveries repeated without the ↻ tag")


async def _dead_letters(report: Report, bus: Bus, expect: Expectations) -> None:
    found: dict[str, int] = {}
    for topic in await bus.topics():
        if not topic.endswith(".dlq"):
            continue
        records = await bus.read(topic)
        # A dead-lettering that is retried after a crash may write the same record again: count
        # source records (partition, offset), not DLQ entries.
        sources = {
            (h.get("mlcp-dlq-partition"), h.get("mlcp-dlq-offset"))
            for h in (dict(r.headers) for r in records)
        }
        if sources:
            found[topic.removeprefix(bus.prefix)] = len(sources)
    report.figures["dead-lettered source records"] = found
    if found != expect.provoked_dlq:
        report.problem(f"dead letters {found} != the ones provoked {expect.provoked_dlq}")
