"""The registry's event handlers against real Kafka and PostgreSQL, including redelivery.

RunFinished → ModelVersionRegistered (one version per run); GatePassed → canary (or production
when the policy has no canary); GateFailed → rejected; CanaryHealthy → production with the old
production kept as rollback target; ModelDegraded → rollback. Every handler is also fed the same
event again (same CloudEvents id: the inbox drops it) and the same facts under a new id (the
business keys make it a no-op).
"""

from __future__ import annotations

import pytest

from mlcp.contracts import (
    ModelPromoted,
    ModelRolledBack,
    ModelVersionRegistered,
    dlq_topic,
)
from tests.conftest import wait_for
from tests.integration.kafka_tools import read_all
from tests.integration.registry_support import (
    Registry,
    canary_healthy,
    degraded,
    gate_failed,
    gate_passed,
    registry,
    run_finished,
)

pytestmark = pytest.mark.integration
__all__ = ["registry"]


async def status_of(reg: Registry, version: str, model: str = "churn") -> str:
    return str(
        await reg.fetchval(
            "SELECT status FROM versions WHERE model = $1 AND version = $2", model, version
        )
    )


async def alias_of(reg: Registry, alias: str, model: str = "churn") -> str | None:
    value = await reg.fetchval(
        "SELECT version FROM aliases WHERE model = $1 AND alias = $2", model, alias
    )
    return None if value is None else str(value)


async def test_run_finished_registers_one_version_per_run_even_when_redelivered(
    registry: Registry,
) -> None:
    first = await registry.publish(run_finished("run-1"))
    await registry.wait_handled(first)
    await registry.redeliver(first)  # same id: the inbox drops it
    again = await registry.publish(run_finished("run-1"))  # same run, new id: business key
    await registry.wait_handled(again)

    rows = await registry.fetch("SELECT version, run_id, status, bump FROM versions")
    assert [tuple(r) for r in rows] == [("1.0.0", "run-1", "candidate", None)]
    registered = await registry.emitted(ModelVersionRegistered.TYPE)
    assert len(registered) == 1
    event = registered[0]
    assert event.data.version == "1.0.0"
    assert event.data.run_id == "run-1"
    assert event.data.previous_version is None
    assert event.causationid == first.id
    assert event.data.artifact.sha256 == run_finished("run-1").artifact.sha256
    version = await registry.fetch(
        "SELECT artifact_uri, artifact_sha256, owner, datasets, reference_profile FROM versions"
    )
    assert version[0]["artifact_uri"] == run_finished("run-1").artifact.uri
    assert version[0]["owner"] == "mlcp/trainer"


async def test_semver_follows_what_changed_between_runs(registry: Registry) -> None:
    base = run_finished("run-1")
    events = [
        await registry.publish(base),
        await registry.publish(run_finished("run-2")),  # data only → patch
        await registry.publish(run_finished("run-3", params={"C": 0.1})),  # params → minor
        await registry.publish(
            run_finished(
                "run-4",
                params={"C": 0.1},
                feature_schema=[{"name": "tenure_months", "dtype": "float64"}],
                reference_profile={"rows": 1, "features": {}},
            )
        ),  # schema → major
    ]
    for event in events:
        await registry.wait_handled(event)
    rows = await registry.fetch(
        "SELECT run_id, version, previous_version, bump FROM versions ORDER BY created_at"
    )
    assert [tuple(r) for r in rows] == [
        ("run-1", "1.0.0", None, None),
        ("run-2", "1.0.1", "1.0.0", "patch"),
        ("run-3", "1.1.0", "1.0.1", "minor"),
        ("run-4", "2.0.0", "1.1.0", "major"),
    ]
    registered = await registry.emitted(ModelVersionRegistered.TYPE)
    assert [(e.data.version, e.data.bump) for e in registered] == [
        ("1.0.0", None),
        ("1.0.1", "patch"),
        ("1.1.0", "minor"),
        ("2.0.0", "major"),
    ]


async def test_lifecycle_canary_production_and_rollback_with_redelivery(
    registry: Registry,
) -> None:
    for run_id in ("run-1", "run-2"):
        await registry.wait_handled(await registry.publish(run_finished(run_id)))

    # GatePassed → canary at the policy's 10 %.
    passed = await registry.publish(gate_passed("1.0.0"))
    await registry.wait_handled(passed)
    assert await alias_of(registry, "canary") == "1.0.0"
    assert await status_of(registry, "1.0.0") == "canary"
    await registry.redeliver(passed)
    again = await registry.publish(gate_passed("1.0.0"))  # re-sent facts: already the canary
    await registry.wait_handled(again)

    # CanaryHealthy → production (first production: no rollback target).
    healthy = await registry.publish(canary_healthy("1.0.0"))
    await registry.wait_handled(healthy)
    await registry.redeliver(healthy)
    await registry.wait_handled(await registry.publish(canary_healthy("1.0.0")))
    assert await alias_of(registry, "production") == "1.0.0"
    assert await alias_of(registry, "canary") is None

    # The next version goes through canary to production; 1.0.0 becomes the rollback target.
    await registry.wait_handled(await registry.publish(gate_passed("1.0.1")))
    await registry.wait_handled(await registry.publish(canary_healthy("1.0.1")))
    assert await alias_of(registry, "production") == "1.0.1"
    rollout = (await registry.fetch("SELECT * FROM rollouts WHERE model = 'churn'"))[0]
    assert rollout["rollback_target"] == "1.0.0"
    assert await status_of(registry, "1.0.0") == "archived"

    # ModelDegraded on production inside the window → back to the previous stable version.
    bad = await registry.publish(degraded("1.0.1", "production"))
    await registry.wait_handled(bad)
    await registry.redeliver(bad)
    await registry.wait_handled(await registry.publish(degraded("1.0.1", "production")))
    assert await alias_of(registry, "production") == "1.0.0"
    assert await status_of(registry, "1.0.1") == "rejected"
    assert await status_of(registry, "1.0.0") == "production"

    promoted = await registry.emitted(ModelPromoted.TYPE)
    assert [
        (e.data.alias, e.data.version, e.data.previous_version, e.data.cause) for e in promoted
    ] == [
        ("canary", "1.0.0", None, "gate_passed"),
        ("production", "1.0.0", None, "canary_healthy"),
        ("canary", "1.0.1", None, "gate_passed"),
        ("production", "1.0.1", "1.0.0", "canary_healthy"),
    ]
    assert promoted[0].data.traffic_percent == 10
    assert promoted[1].data.traffic_percent == 100
    assert promoted[0].causationid == passed.id
    rolled = await registry.emitted(ModelRolledBack.TYPE)
    assert len(rolled) == 1
    assert rolled[0].data.alias == "production"
    assert (rolled[0].data.from_version, rolled[0].data.to_version) == ("1.0.1", "1.0.0")
    assert rolled[0].data.cause == "degraded"
    assert rolled[0].causationid == bad.id
    assert "error_rate" in (rolled[0].data.reason or "")

    history = await registry.fetch(
        "SELECT alias, version, previous_version, actor, cause_event_id FROM alias_history "
        "WHERE alias = 'production' ORDER BY id"
    )
    assert [(h["version"], h["previous_version"]) for h in history] == [
        ("1.0.0", None),
        ("1.0.1", "1.0.0"),
        ("1.0.0", "1.0.1"),
    ]
    assert history[-1]["cause_event_id"] == bad.id
    assert history[-1]["actor"] == "mlcp/monitor"


async def test_degraded_canary_is_removed_and_gate_failed_rejects(registry: Registry) -> None:
    for run_id in ("run-1", "run-2"):
        await registry.wait_handled(await registry.publish(run_finished(run_id)))
    await registry.wait_handled(await registry.publish(gate_passed("1.0.0")))
    bad = await registry.publish(degraded("1.0.0", "canary"))
    await registry.wait_handled(bad)
    await registry.redeliver(bad)
    assert await alias_of(registry, "canary") is None
    assert await status_of(registry, "1.0.0") == "rejected"

    failed = await registry.publish(gate_failed("1.0.1"))
    await registry.wait_handled(failed)
    await registry.redeliver(failed)
    assert await status_of(registry, "1.0.1") == "rejected"
    # A late GatePassed for a rejected version does not resurrect it.
    await registry.wait_handled(await registry.publish(gate_passed("1.0.1")))
    assert await alias_of(registry, "canary") is None

    rolled = await registry.emitted(ModelRolledBack.TYPE)
    assert [(e.data.alias, e.data.from_version, e.data.to_version) for e in rolled] == [
        ("canary", "1.0.0", None)
    ]
    actions = await registry.fetch("SELECT action, version FROM audit_log ORDER BY seq")
    assert [tuple(a) for a in actions] == [
        ("registration", "1.0.0"),
        ("registration", "1.0.1"),
        ("promotion", "1.0.0"),
        ("rollback", "1.0.0"),
        ("rejection", "1.0.1"),
    ]


async def test_zero_canary_policy_goes_straight_to_production(registry: Registry) -> None:
    for run_id in ("run-1", "run-2"):
        await registry.wait_handled(await registry.publish(run_finished(run_id, model="direct")))
    await registry.wait_handled(await registry.publish(gate_passed("1.0.0", model="direct")))
    await registry.wait_handled(await registry.publish(gate_passed("1.0.1", model="direct")))
    assert await alias_of(registry, "production", "direct") == "1.0.1"
    assert await alias_of(registry, "canary", "direct") is None
    rollout = (await registry.fetch("SELECT * FROM rollouts WHERE model = 'direct'"))[0]
    assert rollout["rollback_target"] == "1.0.0"
    promoted = await registry.emitted(ModelPromoted.TYPE)
    assert [(e.data.alias, e.data.version, e.data.traffic_percent) for e in promoted] == [
        ("production", "1.0.0", 100),
        ("production", "1.0.1", 100),
    ]


async def test_event_for_an_unknown_version_is_dead_lettered(registry: Registry) -> None:
    await registry.wait_handled(await registry.publish(run_finished("run-1")))
    await registry.publish(gate_passed("9.9.9"))

    async def dead_lettered() -> list[object]:
        topic = dlq_topic(registry.settings.topic(gate_passed("9.9.9").TYPE))
        return await read_all(registry.infra.admin, topic)

    letters = await wait_for(dead_lettered, timeout=30, what="the DLQ record")
    headers = dict(letters[0].headers)
    assert headers["mlcp-dlq-reason"] == b"handler_failed"
    assert b"has no version '9.9.9'" in headers["mlcp-dlq-error"]
    # The partition keeps flowing: the next event is applied.
    after = await registry.publish(gate_passed("1.0.0"))
    await registry.wait_handled(after)
    assert await alias_of(registry, "canary") == "1.0.0"
