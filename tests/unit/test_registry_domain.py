"""The registry's pure decisions: SemVer policy, promotion and rollback rules, RBAC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcp.contracts.registry import check_bump
from mlcp.registry import domain, transitions
from mlcp.registry.domain import Conflict, VersionFacts
from mlcp.registry.transitions import Rollout

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
BASE = VersionFacts(
    feature_schema=(("age", "int64"), ("plan", "object")),
    code_version="abc123",
    entrypoint="m:train",
    params={"C": 1.0, "seed": 7},
)


def facts(**changes: object) -> VersionFacts:
    values = {**BASE.__dict__, **changes}
    return VersionFacts(**values)  # type: ignore[arg-type]


# --- SemVer ------------------------------------------------------------------------------------


def test_first_version_is_1_0_0_without_bump() -> None:
    assert domain.next_version(None, None, BASE) == ("1.0.0", None)


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        ({"feature_schema": (("age", "float64"), ("plan", "object"))}, ("2.0.0", "major")),
        ({"feature_schema": (("plan", "object"), ("age", "int64"))}, ("2.0.0", "major")),
        ({"feature_schema": (("age", "int64"),)}, ("2.0.0", "major")),
        ({"code_version": "def456"}, ("1.5.0", "minor")),
        ({"entrypoint": "m:train_v2"}, ("1.5.0", "minor")),
        ({"params": {"C": 0.5, "seed": 7}}, ("1.5.0", "minor")),
        ({"params": {"C": 1.0}}, ("1.5.0", "minor")),
        ({}, ("1.4.3", "patch")),
    ],
)
def test_bump_follows_what_changed(changed: dict[str, object], expected: tuple[str, str]) -> None:
    assert domain.next_version("1.4.2", BASE, facts(**changed)) == expected


def test_schema_change_wins_over_code_and_params() -> None:
    new = facts(feature_schema=(("x", "int64"),), code_version="zzz", params={})
    assert domain.next_version("3.2.1", BASE, new) == ("4.0.0", "major")


@settings(max_examples=30, deadline=None)
@given(
    st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50)),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_assigned_versions_satisfy_the_contract(
    parts: tuple[int, int, int], schema: bool, code: bool, params: bool
) -> None:
    latest = "{}.{}.{}".format(*parts)
    new = facts(
        feature_schema=(("z", "bool"),) if schema else BASE.feature_schema,
        code_version="other" if code else BASE.code_version,
        params={"C": 2.0} if params else BASE.params,
    )
    version, bump = domain.next_version(latest, BASE, new)
    assert bump is not None
    check_bump(latest, version, bump)  # raises unless version follows latest by bump


# --- promotion ---------------------------------------------------------------------------------


def test_gate_passed_makes_a_candidate_the_canary_at_the_policy_percent() -> None:
    t = transitions.on_gate_passed(Rollout(production="1.0.0"), "1.1.0", "candidate", 10, NOW)
    assert t.kind == "promoted"
    assert t.rollout.canary == "1.1.0"
    assert t.rollout.canary_percent == 10
    assert t.rollout.production == "1.0.0"
    assert t.statuses == {"1.1.0": "canary"}
    assert t.moves == (transitions.AliasMove("canary", "1.1.0", None, 10.0),)


def test_gate_passed_with_zero_canary_goes_straight_to_production() -> None:
    start = Rollout(production="1.0.0", production_since=NOW - timedelta(days=3))
    t = transitions.on_gate_passed(start, "1.1.0", "candidate", 0, NOW)
    assert t.rollout.production == "1.1.0"
    assert t.rollout.rollback_target == "1.0.0"
    assert t.rollout.production_since == NOW
    assert t.statuses == {"1.0.0": "archived", "1.1.0": "production"}
    assert t.moves == (transitions.AliasMove("production", "1.1.0", "1.0.0", 100.0),)


def test_gate_passed_replaces_an_older_canary() -> None:
    t = transitions.on_gate_passed(
        Rollout(canary="1.1.0", canary_percent=10), "1.2.0", "candidate", 20, NOW
    )
    assert t.rollout.canary == "1.2.0"
    assert t.statuses == {"1.1.0": "approved", "1.2.0": "canary"}
    assert t.moves[0].previous_version == "1.1.0"


@pytest.mark.parametrize("status", ["rejected", "canary", "production", "archived"])
def test_gate_passed_leaves_non_candidates_alone(status: domain.Status) -> None:
    start = Rollout(canary="1.1.0")
    t = transitions.on_gate_passed(start, "1.1.0", status, 10, NOW)
    assert t.kind == "none"
    assert t.rollout == start
    assert not t.moves


def test_gate_failed_rejects_a_candidate_only() -> None:
    start = Rollout(production="1.0.0")
    t = transitions.on_gate_failed(start, "1.1.0", "candidate", "accuracy 0.8 < 0.9")
    assert (t.kind, t.statuses, t.rollout, t.reason) == (
        "rejected",
        {"1.1.0": "rejected"},
        start,
        "accuracy 0.8 < 0.9",
    )
    assert transitions.on_gate_failed(start, "1.0.0", "production", "late").kind == "none"


def test_canary_healthy_promotes_and_keeps_previous_production_as_target() -> None:
    start = Rollout(canary="1.1.0", canary_percent=10, production="1.0.0")
    t = transitions.on_canary_healthy(start, "1.1.0", NOW)
    assert t.rollout == Rollout(production="1.1.0", production_since=NOW, rollback_target="1.0.0")
    assert t.statuses == {"1.0.0": "archived", "1.1.0": "production"}
    assert [m.alias for m in t.moves] == ["canary", "production"]
    assert t.moves[1] == transitions.AliasMove("production", "1.1.0", "1.0.0", 100.0)


def test_canary_healthy_about_a_replaced_canary_is_ignored() -> None:
    start = Rollout(canary="1.2.0", production="1.0.0")
    t = transitions.on_canary_healthy(start, "1.1.0", NOW)
    assert t.kind == "none"
    assert t.rollout == start


# --- rollback ----------------------------------------------------------------------------------

WINDOW = timedelta(hours=24)


def test_degraded_canary_is_removed_and_rejected() -> None:
    start = Rollout(canary="1.1.0", canary_percent=10, production="1.0.0")
    t = transitions.on_degraded(start, "1.1.0", "canary", NOW, WINDOW)
    assert t.kind == "rolled_back"
    assert t.rollout.canary is None
    assert t.rollout.production == "1.0.0"
    assert t.statuses == {"1.1.0": "rejected"}
    assert t.moves == (transitions.AliasMove("canary", None, "1.1.0", None),)


def test_degraded_production_inside_window_returns_to_previous_stable() -> None:
    start = Rollout(
        production="1.1.0", production_since=NOW - timedelta(hours=2), rollback_target="1.0.0"
    )
    t = transitions.on_degraded(start, "1.1.0", "production", NOW, WINDOW)
    assert t.kind == "rolled_back"
    assert t.rollout.production == "1.0.0"
    assert t.rollout.rollback_target is None
    assert t.statuses == {"1.1.0": "rejected", "1.0.0": "production"}
    assert t.moves == (transitions.AliasMove("production", "1.0.0", "1.1.0", 100.0),)


def test_degraded_production_outside_window_is_not_rolled_back() -> None:
    start = Rollout(
        production="1.1.0", production_since=NOW - timedelta(hours=25), rollback_target="1.0.0"
    )
    t = transitions.on_degraded(start, "1.1.0", "production", NOW, WINDOW)
    assert t.kind == "none"
    assert "window" in t.reason


def test_degraded_without_target_or_for_a_stale_version_changes_nothing() -> None:
    assert (
        transitions.on_degraded(
            Rollout(production="1.0.0"), "1.0.0", "production", NOW, WINDOW
        ).kind
        == "none"
    )
    start = Rollout(production="1.2.0", rollback_target="1.1.0")
    assert transitions.on_degraded(start, "1.1.0", "production", NOW, WINDOW).kind == "none"
    assert (
        transitions.on_degraded(Rollout(canary="1.3.0"), "1.2.0", "canary", NOW, WINDOW).kind
        == "none"
    )


# --- manual actions ----------------------------------------------------------------------------


def test_manual_promote_of_a_rejected_version_conflicts() -> None:
    with pytest.raises(Conflict, match="rejected"):
        transitions.manual_promote(Rollout(), {}, "1.0.0", "rejected", "production", NOW)


def test_manual_promote_to_the_alias_it_already_holds_conflicts() -> None:
    with pytest.raises(Conflict, match="already points"):
        transitions.manual_promote(
            Rollout(production="1.0.0"),
            {"production": "1.0.0"},
            "1.0.0",
            "production",
            "production",
            NOW,
        )


def test_manual_promote_to_production_keeps_rollback_target() -> None:
    start = Rollout(production="1.0.0")
    t = transitions.manual_promote(
        start, {"production": "1.0.0"}, "1.1.0", "approved", "production", NOW
    )
    assert t.rollout.production == "1.1.0"
    assert t.rollout.rollback_target == "1.0.0"


def test_manual_promote_to_a_custom_alias_moves_only_that_alias() -> None:
    start = Rollout(production="1.0.0")
    t = transitions.manual_promote(start, {"shadow": "0.9.0"}, "1.1.0", "candidate", "shadow", NOW)
    assert t.rollout == start
    assert t.statuses == {}
    assert t.moves == (transitions.AliasMove("shadow", "1.1.0", "0.9.0", None),)


def test_manual_rollback_rules() -> None:
    with pytest.raises(Conflict, match="no version"):
        transitions.manual_rollback(Rollout(), {}, "canary", NOW)
    with pytest.raises(Conflict, match="no previous"):
        transitions.manual_rollback(
            Rollout(production="1.0.0"), {"production": "1.0.0"}, "production", NOW
        )
    start = Rollout(production="1.1.0", rollback_target="1.0.0")
    t = transitions.manual_rollback(start, {"production": "1.1.0"}, "production", NOW)
    assert t.rollout.production == "1.0.0"
    assert t.statuses == {"1.1.0": "archived", "1.0.0": "production"}
    t = transitions.manual_rollback(Rollout(canary="1.2.0"), {"canary": "1.2.0"}, "canary", NOW)
    assert t.rollout.canary is None
    assert t.statuses == {"1.2.0": "approved"}


# --- RBAC --------------------------------------------------------------------------------------

EXPECTED = {
    "viewer": {"read"},
    "operator": {"read", "promote", "rollback", "report_check"},
    "approver": {"read", "approve"},
    "auditor": {"read", "audit_read"},
    "admin": set(domain.PERMISSIONS),
}


@pytest.mark.parametrize("role", domain.ROLES)
@pytest.mark.parametrize("permission", domain.PERMISSIONS)
def test_permission_table(role: str, permission: domain.Permission) -> None:
    assert domain.allowed([role], permission) is (permission in EXPECTED[role])


def test_no_role_or_unknown_role_grants_nothing() -> None:
    assert not any(domain.allowed([], p) for p in domain.PERMISSIONS)
    assert not any(domain.allowed(["root"], p) for p in domain.PERMISSIONS)


def test_active_roles_drop_expired_and_revoked_grants() -> None:
    grants = [
        ("viewer", None, None),
        ("operator", NOW + timedelta(seconds=1), None),
        ("admin", NOW, None),  # expires exactly now: expired
        ("approver", None, NOW - timedelta(days=1)),
    ]
    assert domain.active_roles(grants, NOW) == ["operator", "viewer"]
