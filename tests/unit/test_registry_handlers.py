"""Every decision of the registry's event handlers, against in-memory fakes (no Kafka, no SQL).

The same handlers run against real Kafka and PostgreSQL in tests/integration/test_registry_*.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlcp.contracts import (
    CloudEvent,
    EventData,
    ModelPromoted,
    ModelRolledBack,
    ModelVersionRegistered,
    new_event,
)
from mlcp.policy.platform import parse_platform_config
from mlcp.registry.cache import model_scope
from mlcp.registry.handlers import Handlers, UnknownVersion
from mlcp.registry.transitions import Rollout
from tests.fakes.registry import FakeRegistry
from tests.fakes.tx import RecordingTx
from tests.integration.registry_support import (
    CONFIG,
    canary_healthy,
    degraded,
    gate_failed,
    gate_passed,
    run_finished,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TRAINER = "mlcp/trainer"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class Harness:
    """The registry's handlers over fakes; ``deliver`` runs one event as the runtime would."""

    def __init__(self) -> None:
        self.fake = FakeRegistry()
        self.clock = Clock()
        self.handlers = Handlers(parse_platform_config(CONFIG), self.fake.ports, self.clock)
        self.routes = {
            "mlcp.run.finished.v1": self.handlers.on_run_finished,
            "mlcp.gate.passed.v1": self.handlers.on_gate_passed,
            "mlcp.gate.failed.v1": self.handlers.on_gate_failed,
            "mlcp.canary.healthy.v1": self.handlers.on_canary_healthy,
            "mlcp.model.degraded.v1": self.handlers.on_model_degraded,
        }

    async def deliver(
        self, data: EventData, *, source: str = "mlcp/test", correlationid: str | None = None
    ) -> RecordingTx:
        event: CloudEvent[Any] = new_event(data, source=source, correlationid=correlationid)
        tx = RecordingTx(service="registry", cause=event)
        await self.routes[event.type](event, tx)
        return tx

    async def register(self, run_id: str, model: str = "churn", **changes: Any) -> str:
        """Register a run; the version it became."""
        tx = await self.deliver(run_finished(run_id, model, **changes), source=TRAINER)
        registered = [e.data for e in tx.emitted if e.type == ModelVersionRegistered.TYPE]
        assert len(registered) == 1
        version: str = registered[0].version
        return version

    async def to_canary(self, run_id: str, model: str = "churn") -> str:
        version = await self.register(run_id, model)
        await self.deliver(gate_passed(version, model))
        return version

    async def to_production(self, run_id: str, model: str = "churn") -> str:
        version = await self.to_canary(run_id, model)
        await self.deliver(canary_healthy(version, model))
        return version


@pytest.fixture
def h() -> Harness:
    return Harness()


def data_of(tx: RecordingTx, kind: type[EventData]) -> list[Any]:
    return [e.data for e in tx.emitted if e.type == kind.TYPE]


# --- RunFinished → version registered ------------------------------------------------------------


async def test_first_run_becomes_candidate_1_0_0_with_its_metadata(h: Harness) -> None:
    run = run_finished("run-1")
    tx = await h.deliver(run, source=TRAINER, correlationid="lifecycle-1")
    assert tx.emitted_types() == [ModelVersionRegistered.TYPE]
    event = tx.emitted[0]
    registered = event.data
    assert (registered.model, registered.version, registered.bump) == ("churn", "1.0.0", None)
    assert registered.previous_version is None
    assert registered.artifact == run.artifact
    assert registered.feature_schema == run.feature_schema
    assert event.correlationid == "lifecycle-1"
    stored = h.fake.store.versions[("churn", "1.0.0")]
    assert stored.status == "candidate"
    assert (stored.run_id, stored.owner, stored.created_at) == ("run-1", TRAINER, NOW)
    assert stored.correlation_id == "lifecycle-1"
    assert stored.artifact_sha256 == run.artifact.sha256
    assert stored.training_reason == run.reason
    assert stored.environment == run.environment.model_dump(mode="json")
    assert h.fake.audit.actions() == ["registration"]
    entry = h.fake.audit.entries[0]
    assert (entry.actor, entry.version, entry.cause_event_id) == (TRAINER, "1.0.0", tx.cause.id)


async def test_run_without_correlation_starts_its_lifecycle_at_its_own_id(h: Harness) -> None:
    tx = await h.deliver(run_finished("run-1"), source=TRAINER)
    assert tx.cause is not None
    assert h.fake.store.versions[("churn", "1.0.0")].correlation_id == tx.cause.id


async def test_same_run_delivered_again_registers_nothing(h: Harness) -> None:
    await h.register("run-1")
    again = await h.deliver(run_finished("run-1"), source=TRAINER)  # new CloudEvents id
    assert again.emitted == []
    assert list(h.fake.store.versions) == [("churn", "1.0.0")]
    assert h.fake.audit.actions() == ["registration"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, ("1.0.1", "patch")),
        ({"params": {"C": 2.0}}, ("1.1.0", "minor")),
        ({"code_version": "other-commit"}, ("1.1.0", "minor")),
    ],
)
async def test_next_run_bumps_by_what_changed(
    h: Harness, changes: dict[str, Any], expected: tuple[str, str]
) -> None:
    await h.register("run-1")
    tx = await h.deliver(run_finished("run-2", **changes), source=TRAINER)
    [registered] = data_of(tx, ModelVersionRegistered)
    assert (registered.version, registered.bump) == expected
    assert registered.previous_version == "1.0.0"


async def test_feature_schema_change_is_a_major_bump(h: Harness) -> None:
    first = run_finished("run-1")
    await h.register("run-1")
    fewer = first.feature_schema[:-1]
    tx = await h.deliver(
        run_finished(
            "run-2",
            feature_schema=[f.model_dump() for f in fewer],
            reference_profile={
                **first.reference_profile.model_dump(),
                "features": {
                    k: v
                    for k, v in first.reference_profile.model_dump()["features"].items()
                    if k in {f.name for f in fewer}
                },
            },
        ),
        source=TRAINER,
    )
    [registered] = data_of(tx, ModelVersionRegistered)
    assert (registered.version, registered.bump) == ("2.0.0", "major")


async def test_versions_of_two_models_are_numbered_apart(h: Harness) -> None:
    assert await h.register("run-1", "churn") == "1.0.0"
    assert await h.register("run-2", "direct") == "1.0.0"


# --- GatePassed / GateFailed --------------------------------------------------------------------


async def test_gate_passed_makes_the_candidate_canary_at_the_policy_percent(h: Harness) -> None:
    version = await h.register("run-1")
    tx = await h.deliver(gate_passed(version), source="mlcp/gatekeeper")
    [promoted] = data_of(tx, ModelPromoted)
    assert (promoted.alias, promoted.version, promoted.traffic_percent) == ("canary", "1.0.0", 10)
    assert (promoted.cause, promoted.actor) == ("gate_passed", None)
    assert h.fake.store.status("churn", version) == "canary"
    assert h.fake.store.aliases["churn"] == {"canary": "1.0.0"}
    assert h.fake.store.rollouts["churn"] == Rollout(canary="1.0.0", canary_percent=10.0)
    assert h.fake.cache.invalidated == [model_scope("churn")]
    assert h.fake.audit.actions() == ["registration", "promotion"]
    change = h.fake.store.history[0]
    assert (change.actor, change.cause_event_id, change.at) == (
        "mlcp/gatekeeper",
        tx.cause.id if tx.cause else None,
        NOW,
    )


async def test_gate_passed_with_zero_canary_goes_straight_to_production(h: Harness) -> None:
    version = await h.register("run-1", "direct")
    tx = await h.deliver(gate_passed(version, "direct"))
    [promoted] = data_of(tx, ModelPromoted)
    assert (promoted.alias, promoted.traffic_percent) == ("production", 100)
    assert h.fake.store.status("direct", version) == "production"
    assert h.fake.store.rollouts["direct"].production_since == NOW


async def test_model_missing_from_the_config_gets_the_default_rollout(h: Harness) -> None:
    version = await h.register("run-1", "unconfigured")
    tx = await h.deliver(gate_passed(version, "unconfigured"))
    [promoted] = data_of(tx, ModelPromoted)
    assert (promoted.alias, promoted.traffic_percent) == ("canary", 10)


async def test_newer_candidate_replaces_the_canary_which_stays_approved(h: Harness) -> None:
    older = await h.to_canary("run-1")
    newer = await h.register("run-2")
    tx = await h.deliver(gate_passed(newer))
    [promoted] = data_of(tx, ModelPromoted)
    assert (promoted.version, promoted.previous_version) == (newer, older)
    assert h.fake.store.status("churn", older) == "approved"
    assert h.fake.store.aliases["churn"] == {"canary": newer}


async def test_gate_passed_again_for_the_canary_changes_nothing(h: Harness) -> None:
    version = await h.to_canary("run-1")
    audit_before = list(h.fake.audit.entries)
    tx = await h.deliver(gate_passed(version))
    assert tx.emitted == []
    assert h.fake.audit.entries == audit_before
    assert h.fake.cache.invalidated == [model_scope("churn")]  # only the first promotion's


async def test_gate_failed_rejects_the_candidate_without_an_event(h: Harness) -> None:
    version = await h.register("run-1")
    tx = await h.deliver(gate_failed(version))
    assert tx.emitted == []
    assert h.fake.store.status("churn", version) == "rejected"
    rejection = h.fake.audit.entries[-1]
    assert rejection.action == "rejection"
    assert rejection.after == {
        "status": "rejected",
        "reason": "gate quality failed: accuracy 0.8 < 0.9",
    }


async def test_late_gate_failed_leaves_a_serving_version_alone(h: Harness) -> None:
    version = await h.to_production("run-1")
    tx = await h.deliver(gate_failed(version))
    assert tx.emitted == []
    assert h.fake.store.status("churn", version) == "production"


async def test_gate_passed_after_gate_failed_does_not_resurrect_the_version(h: Harness) -> None:
    version = await h.register("run-1")
    await h.deliver(gate_failed(version))
    tx = await h.deliver(gate_passed(version))
    assert tx.emitted == []
    assert h.fake.store.status("churn", version) == "rejected"
    assert "canary" not in h.fake.store.aliases.get("churn", {})


@pytest.mark.parametrize(
    "event",
    [
        gate_passed("9.9.9"),
        gate_failed("9.9.9"),
        canary_healthy("9.9.9"),
        degraded("9.9.9", "canary"),
    ],
)
async def test_event_about_an_unknown_version_fails_for_the_dlq(
    h: Harness, event: EventData
) -> None:
    with pytest.raises(UnknownVersion, match=r"9\.9\.9"):
        await h.deliver(event)


# --- CanaryHealthy ------------------------------------------------------------------------------


async def test_healthy_canary_becomes_production_and_old_production_the_target(
    h: Harness,
) -> None:
    old = await h.to_production("run-1")
    h.clock.now = NOW + timedelta(hours=1)
    new = await h.to_canary("run-2")
    tx = await h.deliver(canary_healthy(new))
    [promoted] = data_of(tx, ModelPromoted)
    assert (promoted.alias, promoted.version, promoted.previous_version) == (
        "production",
        new,
        old,
    )
    assert promoted.cause == "canary_healthy"
    assert h.fake.store.status("churn", old) == "archived"
    assert h.fake.store.status("churn", new) == "production"
    assert h.fake.store.aliases["churn"] == {"production": new}
    assert h.fake.store.rollouts["churn"] == Rollout(
        production=new, production_since=h.clock.now, rollback_target=old
    )
    # One audit row per alias move: the canary removed, production moved.
    assert h.fake.audit.actions()[-2:] == ["promotion", "promotion"]
    assert [e.after["alias"] for e in h.fake.audit.entries[-2:]] == ["canary", "production"]


async def test_canary_healthy_before_gate_passed_is_ignored(h: Harness) -> None:
    version = await h.register("run-1")  # out of order: not the canary yet
    tx = await h.deliver(canary_healthy(version))
    assert tx.emitted == []
    assert h.fake.store.status("churn", version) == "candidate"


async def test_canary_healthy_about_a_replaced_canary_is_ignored(h: Harness) -> None:
    older = await h.to_canary("run-1")
    await h.to_canary("run-2")
    tx = await h.deliver(canary_healthy(older))
    assert tx.emitted == []
    assert h.fake.store.status("churn", older) == "approved"


async def test_canary_healthy_twice_promotes_once(h: Harness) -> None:
    version = await h.to_production("run-1")
    tx = await h.deliver(canary_healthy(version))
    assert tx.emitted == []
    assert h.fake.store.status("churn", version) == "production"


# --- ModelDegraded ------------------------------------------------------------------------------


async def test_degraded_canary_is_removed_and_rejected(h: Harness) -> None:
    production = await h.to_production("run-1")
    canary = await h.to_canary("run-2")
    tx = await h.deliver(degraded(canary, "canary"), source="mlcp/monitor")
    [rolled] = data_of(tx, ModelRolledBack)
    assert (rolled.alias, rolled.from_version, rolled.to_version) == ("canary", canary, None)
    assert (rolled.cause, rolled.actor) == ("degraded", None)
    assert rolled.reason == "canary degraded: error_rate 0.09 > 0.05"
    assert h.fake.store.status("churn", canary) == "rejected"
    assert h.fake.store.aliases["churn"] == {"production": production}
    assert h.fake.audit.entries[-1].action == "rollback"


async def test_degraded_production_inside_the_window_returns_to_the_target(h: Harness) -> None:
    old = await h.to_production("run-1")
    new = await h.to_production("run-2")
    h.clock.now = NOW + timedelta(minutes=59)  # rollback_window: 1h
    tx = await h.deliver(degraded(new, "production"))
    [rolled] = data_of(tx, ModelRolledBack)
    assert (rolled.alias, rolled.from_version, rolled.to_version) == ("production", new, old)
    assert rolled.reason == "production degraded: error_rate 0.09 > 0.05"
    assert h.fake.store.status("churn", new) == "rejected"
    assert h.fake.store.status("churn", old) == "production"
    assert h.fake.store.rollouts["churn"] == Rollout(production=old, production_since=h.clock.now)


async def test_degraded_production_outside_the_window_is_left_serving(h: Harness) -> None:
    await h.to_production("run-1")
    new = await h.to_production("run-2")
    h.clock.now = NOW + timedelta(hours=1, seconds=1)
    tx = await h.deliver(degraded(new, "production"))
    assert tx.emitted == []
    assert h.fake.store.status("churn", new) == "production"


async def test_degraded_production_without_a_target_changes_nothing(h: Harness) -> None:
    only = await h.to_production("run-1")
    tx = await h.deliver(degraded(only, "production"))
    assert tx.emitted == []
    assert h.fake.store.status("churn", only) == "production"


async def test_degraded_report_about_a_version_no_longer_serving_is_ignored(h: Harness) -> None:
    old = await h.to_production("run-1")
    await h.to_production("run-2")
    for alias in ("canary", "production"):
        tx = await h.deliver(degraded(old, alias))
        assert tx.emitted == []
    assert h.fake.store.status("churn", old) == "archived"


async def test_rollback_twice_does_not_bounce_between_two_versions(h: Harness) -> None:
    old = await h.to_production("run-1")
    new = await h.to_production("run-2")
    await h.deliver(degraded(new, "production"))
    tx = await h.deliver(degraded(old, "production"))
    assert tx.emitted == []  # the target was cleared by the first rollback
    assert h.fake.store.aliases["churn"] == {"production": old}
