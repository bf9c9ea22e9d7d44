"""`mlcp bus apply` sets the configuration the event catalog fixes for a topic (real Kafka): the
audit checkpoints' topic is created kept for ever, and a retention someone changed is set back
while the topic's other settings stay."""

from __future__ import annotations

import pytest

from mlcp.contracts import AuditCheckpointed, topic_config
from mlcp.policy.acl import load_policy
from mlcp.runtime.bus import admin_client, apply
from mlcp.runtime.kafka_admin import set_topic_configs, topic_configs
from tests.conftest import Infra

pytestmark = pytest.mark.integration

WEEK_MS = "604800000"


async def test_apply_creates_the_checkpoint_topic_kept_for_ever_and_sets_it_back(
    infra: Infra, unique: str
) -> None:
    prefix = f"t{unique}."
    topic = prefix + AuditCheckpointed.TYPE
    wanted = topic_config(AuditCheckpointed.TYPE)
    assert wanted == {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}

    created = await apply(infra.admin, load_policy(), prefix=prefix)
    assert topic in created.missing_topics
    async with admin_client(infra.admin) as admin:
        effective, _ = (await topic_configs(admin, [topic]))[topic]
        assert {key: effective[key] for key in wanted} == wanted
        # Someone shortens the retention (and tunes something of their own on the topic).
        await set_topic_configs(
            admin, {topic: {**wanted, "retention.ms": WEEK_MS, "max.message.bytes": "2000000"}}
        )

    planned = await apply(infra.admin, load_policy(), prefix=prefix, dry_run=True)
    assert list(planned.configs) == [topic]
    assert planned.configs[topic].wanted == {"retention.ms": "-1"}
    assert f"~ topic {topic} retention.ms: {WEEK_MS} -> -1" in planned.lines()
    assert (planned.missing_topics, planned.add, planned.remove) == ([], [], [])

    await apply(infra.admin, load_policy(), prefix=prefix)
    async with admin_client(infra.admin) as admin:
        effective, own = (await topic_configs(admin, [topic]))[topic]
    assert {key: effective[key] for key in wanted} == wanted
    assert own["max.message.bytes"] == "2000000", "settings the catalog does not fix are kept"
    assert (await apply(infra.admin, load_policy(), prefix=prefix, dry_run=True)).empty
