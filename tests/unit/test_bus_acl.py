"""The ACL file (mlcp/policy/acls.yaml) against the event catalog and the services: every topic
has exactly its owner as writer, each service reads exactly what it subscribes to, and the
Kafka ACLs that follow grant nothing more; topics are made with the configuration the event
catalog fixes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcp.contracts import ALL_TOPICS, dlq_topic
from mlcp.gatekeeper.app import build as build_gatekeeper
from mlcp.monitor.app import build as build_monitor
from mlcp.notifier.app import build as build_notifier
from mlcp.policy.acl import AclBinding, PolicyError, load_policy, parse_policy
from mlcp.registry.app import build as build_registry
from mlcp.runtime import ServiceRuntime, Settings
from mlcp.runtime.bus import BusPlan, ConfigChange, TopicLayout
from mlcp.trainer.app import build as build_trainer

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "mlcp.example.yaml"

# Who emits what, as the event catalog of the README states it.
OWNERS = {
    "mlcp.data.arrived.v1": "pipeline",
    "mlcp.training.requested.v1": "svc-trainer",
    "mlcp.run.started.v1": "svc-trainer",
    "mlcp.run.finished.v1": "svc-trainer",
    "mlcp.run.failed.v1": "svc-trainer",
    "mlcp.model.registered.v1": "svc-registry",
    "mlcp.gate.check_passed.v1": "svc-gatekeeper",
    "mlcp.gate.failed.v1": "svc-gatekeeper",
    "mlcp.gate.passed.v1": "svc-gatekeeper",
    "mlcp.approval.requested.v1": "svc-gatekeeper",
    "mlcp.approval.granted.v1": "svc-registry",
    "mlcp.approval.rejected.v1": "svc-registry",
    "mlcp.check.reported.v1": "svc-registry",
    "mlcp.model.promoted.v1": "svc-registry",
    "mlcp.model.rolled_back.v1": "svc-registry",
    "mlcp.prediction.logged.v1": "inference",
    "mlcp.feedback.received.v1": "inference",
    "mlcp.prediction.batch_logged.v1": "inference",
    "mlcp.drift.detected.v1": "svc-monitor",
    "mlcp.model.degraded.v1": "svc-monitor",
    "mlcp.canary.healthy.v1": "svc-monitor",
    "mlcp.audit.checkpointed.v1": "svc-registry",
}


def test_every_catalog_topic_has_exactly_its_owner_as_writer() -> None:
    policy = load_policy()
    assert set(policy.topics) == set(ALL_TOPICS)
    assert set(OWNERS) == set(ALL_TOPICS)
    for topic, access in policy.topics.items():
        assert access.write == (OWNERS[topic],), topic


def test_consumers_accept_only_the_owner_as_source() -> None:
    policy = load_policy()
    assert policy.allowed_sources("mlcp.approval.granted.v1") == {"mlcp/registry"}
    assert policy.allowed_sources("mlcp.gate.passed.v1") == {"mlcp/gatekeeper"}
    assert policy.allowed_sources("mlcp.canary.healthy.v1") == {"mlcp/monitor"}
    assert policy.allowed_sources("mlcp.model.degraded.v1") == {"mlcp/monitor"}
    # Pipelines and inference services name themselves.
    assert policy.allowed_sources("mlcp.data.arrived.v1") is None
    assert policy.allowed_sources("mlcp.prediction.logged.v1") is None


def _services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, ServiceRuntime]:
    monkeypatch.setenv("MLCP_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/slack")
    monkeypatch.setenv("MLCP_WECOM_WEBHOOK_URL", "http://127.0.0.1:9/wecom?key=k")
    settings = Settings(config=EXAMPLE, artifact_root=tmp_path)
    return {
        "registry": build_registry(settings),
        "trainer": build_trainer(settings),
        "gatekeeper": build_gatekeeper(settings),
        "monitor": build_monitor(settings),
        "notifier": build_notifier(settings),
    }


def test_each_service_may_read_exactly_what_it_subscribes_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = load_policy()
    for name, runtime in _services(tmp_path, monkeypatch).items():
        granted = {t for t, a in policy.topics.items() if f"svc-{name}" in a.read}
        assert set(runtime.subscribed_topics()) == granted, name


def test_bindings_grant_least_privilege() -> None:
    policy = load_policy()
    acls = policy.bindings("t1.")

    def who(operation: str, topic: str) -> set[str]:
        return {
            b.principal
            for b in acls
            if b.resource_type == "topic" and b.resource_name == topic and b.operation == operation
        }

    promoted = "t1.mlcp.model.promoted.v1"
    assert who("WRITE", promoted) == {"User:svc-registry"}
    assert who("READ", promoted) == {
        "User:svc-trainer",
        "User:svc-monitor",
        "User:svc-notifier",
        "User:inference",
        "User:operator",
    }
    # Dead letters: written by the topic's consumers, read by the operator; replay is the admin's.
    assert who("WRITE", dlq_topic(promoted)) == {
        "User:svc-trainer",
        "User:svc-monitor",
        "User:svc-notifier",
    }
    assert who("READ", dlq_topic(promoted)) == {"User:operator"}
    # Its writers read the DLQ's max.message.bytes (letters are fitted to it); nothing else's.
    assert who("DESCRIBE_CONFIGS", dlq_topic(promoted)) == who("WRITE", dlq_topic(promoted))
    assert who("DESCRIBE_CONFIGS", promoted) == set()
    assert who("WRITE", "t1.mlcp.data.arrived.v1") == {"User:pipeline"}
    # Groups: each service its own, nobody else.
    groups = {(b.resource_name, b.principal) for b in acls if b.resource_type == "group"}
    assert ("t1.mlcp-registry", "User:svc-registry") in groups
    assert all(name == f"t1.mlcp-{p.removeprefix('User:svc-')}" for name, p in groups)
    # Nothing cluster-wide and no wildcard: the admin is the only super user (broker config).
    assert {b.resource_type for b in acls} == {"topic", "group"}
    assert not any(b.prefixed or b.resource_name == "*" for b in acls)
    assert not any(b.principal == "User:admin" for b in acls)
    assert {b.operation for b in acls} == {"READ", "WRITE", "DESCRIBE_CONFIGS"}
    assert all(b.resource_name.endswith(".dlq") for b in acls if b.operation == "DESCRIBE_CONFIGS")


def test_the_prefix_scopes_every_binding() -> None:
    policy = load_policy()
    plain, prefixed = policy.bindings(""), policy.bindings("tenant7.")
    assert len(plain) == len(prefixed)
    assert all(b.resource_name.startswith("tenant7.") for b in prefixed)
    assert AclBinding("topic", "mlcp.gate.passed.v1", "User:svc-gatekeeper", "WRITE") in plain


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 2\nprincipals: {}\ntopics: {}\n", "version"),
        (
            "version: 1\nprincipals: {admin: {role: admin}}\ntopics: {t: {write: [ghost]}}\n",
            "topics.t.write: unknown principal 'ghost'",
        ),
        (
            "version: 1\nprincipals: {admin: {role: admin}, x-registry: {service: registry}}\n"
            "topics: {}\n",
            "svc-<service>",
        ),
        (
            "version: 1\nprincipals: {admin: {role: admin}, p: {role: producer}}\n"
            "topics: {t: {write: [p], read: [p]}}\n",
            "topics.t.read: p is not a service",
        ),
        ("version: 1\nprincipals: {a: {role: producer}}\ntopics: {}\n", "exactly one principal"),
        (": [", "not YAML"),
    ],
)
def test_an_invalid_acl_file_is_refused_naming_the_place(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=r"x\.yaml") as info:
        parse_policy(text, source="x.yaml")
    assert message in str(info.value)


def test_the_registry_alone_writes_its_checkpoints_and_reads_them_back_without_a_group() -> None:
    policy = load_policy()
    topic = "t1.mlcp.audit.checkpointed.v1"
    acls = {(b.principal, b.operation) for b in policy.bindings("t1.") if b.resource_name == topic}
    assert acls == {
        ("User:svc-registry", "WRITE"),
        ("User:svc-registry", "READ"),
        ("User:operator", "READ"),
    }
    assert policy.allowed_sources("mlcp.audit.checkpointed.v1") == {"mlcp/registry"}


def test_new_topics_get_the_configuration_their_event_type_needs() -> None:
    kept_for_ever = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
    layout = TopicLayout(partitions=3, replication=3, min_insync_replicas=2)
    checkpoints = layout.new_topic("t1.mlcp.audit.checkpointed.v1")
    assert (checkpoints.num_partitions, checkpoints.replication_factor) == (3, 3)
    assert checkpoints.topic_configs == {**kept_for_ever, "min.insync.replicas": "2"}
    assert TopicLayout().new_topic("mlcp.model.promoted.v1").topic_configs == {}
    # Its dead-letter topic is an ordinary one.
    assert TopicLayout().new_topic("mlcp.audit.checkpointed.v1.dlq").topic_configs == {}


def test_a_plan_shows_configuration_to_set_back() -> None:
    change = ConfigChange({"retention.ms": "604800000"}, {"retention.ms": "-1"}, {})
    plan = BusPlan(configs={"mlcp.audit.checkpointed.v1": change})
    assert not plan.empty
    assert plan.lines() == ["~ topic mlcp.audit.checkpointed.v1 retention.ms: 604800000 -> -1"]
