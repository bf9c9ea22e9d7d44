"""Put the ACL file on a cluster: topics, ACLs and SCRAM users, idempotently.

``plan`` compares the file with what the cluster has; ``apply`` makes the cluster match (creates
missing topics with the configuration their event type needs, sets that configuration on
existing topics where it differs, adds missing ACLs, removes ACLs on mlcp's own topics and
groups that the file does not grant — ACLs on anything else are never touched). Both run as
the cluster's super user (``admin`` in the file), through the one client factory of
``mlcp.runtime.kafka``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CoordinatorNotAvailableError,
    NotCoordinatorError,
    TopicAlreadyExistsError,
)

from mlcp.contracts import topic_config
from mlcp.policy.acl import AclBinding, BusPolicy, describe, group_id
from mlcp.runtime.kafka import make_admin
from mlcp.runtime.kafka_admin import (
    create_acls,
    delete_acls,
    describe_acls,
    set_topic_configs,
    topic_configs,
    upsert_scram_user,
)
from mlcp.runtime.settings import Settings


@dataclass(frozen=True)
class TopicLayout:
    """How new topics are made: 1 replica suits the single-node dev stack; production uses 3
    replicas with min.insync.replicas=2 (docs/security.md)."""

    partitions: int = 3
    replication: int = 1
    min_insync_replicas: int | None = None

    def new_topic(self, name: str) -> NewTopic:
        """How topic ``name`` is created: this layout, plus the configuration its event type
        needs (``mlcp.contracts.topic_config``: the audit checkpoints are kept for ever)."""
        configs = topic_config(name)
        if self.min_insync_replicas:
            configs["min.insync.replicas"] = str(self.min_insync_replicas)
        return NewTopic(name, self.partitions, self.replication, topic_configs=configs)


@dataclass(frozen=True)
class ConfigChange:
    """Configuration an existing topic lacks: what it has and the values it must get."""

    current: dict[str, str]
    """The topic's effective values of the keys in ``wanted``."""
    wanted: dict[str, str]
    kept: dict[str, str]
    """Everything else set on the topic itself (AlterConfigs replaces the whole set)."""


@dataclass
class BusPlan:
    """What ``apply`` changes (or, after it, changed)."""

    missing_topics: list[str] = field(default_factory=list)
    configs: dict[str, ConfigChange] = field(default_factory=dict)
    """Existing topics whose configuration differs from what their event type needs."""
    add: list[AclBinding] = field(default_factory=list)
    remove: list[AclBinding] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.missing_topics or self.configs or self.add or self.remove)

    def lines(self) -> list[str]:
        """A readable diff: ``+ topic``, ``~ topic … key: old -> new``, ``+ ACL``, ``- ACL``."""
        return (
            [f"+ topic {name}" for name in self.missing_topics]
            + [
                f"~ topic {name} {key}: {change.current.get(key, '(unset)')} -> {value}"
                for name, change in sorted(self.configs.items())
                for key, value in sorted(change.wanted.items())
            ]
            + [f"+ {line}" for line in describe(self.add)]
            + [f"- {line}" for line in describe(self.remove)]
        )


@contextlib.asynccontextmanager
async def admin_client(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = make_admin(settings, client_id="mlcp-bus", request_timeout_ms=30_000)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def plan(admin: AIOKafkaAdminClient, policy: BusPolicy, prefix: str = "") -> BusPlan:
    """The difference between the file (for topics and groups behind ``prefix``) and the
    cluster."""
    existing_topics = set(await admin.list_topics())
    wanted = policy.bindings(prefix)
    managed = policy.managed(prefix)
    current = {
        b for b in await describe_acls(admin) if (b.resource_type, b.resource_name) in managed
    }
    names = policy.topic_names(prefix)
    return BusPlan(
        missing_topics=[t for t in names if t not in existing_topics],
        configs=await _config_changes(admin, [t for t in names if t in existing_topics]),
        add=sorted(wanted - current),
        remove=sorted(current - wanted),
    )


async def _config_changes(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, ConfigChange]:
    # Only the configuration the contracts fix is compared: partitions, replicas and anything an
    # operator tuned on a topic are theirs.
    needs = {topic: wanted for topic in topics if (wanted := topic_config(topic))}
    changes = {}
    for topic, (effective, dynamic) in (await topic_configs(admin, list(needs))).items():
        wanted = needs[topic]
        differs = {key: value for key, value in wanted.items() if effective.get(key) != value}
        if differs:
            current = {key: effective[key] for key in differs if key in effective}
            kept = {key: value for key, value in dynamic.items() if key not in differs}
            changes[topic] = ConfigChange(current, differs, kept)
    return changes


async def apply(
    settings: Settings,
    policy: BusPolicy,
    *,
    prefix: str = "",
    layout: TopicLayout | None = None,
    dry_run: bool = False,
) -> BusPlan:
    """Make the cluster match the file; returns what was (or, with ``dry_run``, would be)
    changed. ``settings`` must authenticate as the super user."""
    layout = layout or TopicLayout()
    async with admin_client(settings) as admin:
        todo = await plan(admin, policy, prefix)
        if dry_run:
            return todo
        await _until_group_coordinator(admin, group_id(prefix, "bus-apply"))
        if todo.empty:
            return todo
        if todo.missing_topics:
            new = [layout.new_topic(name) for name in todo.missing_topics]
            for start in range(0, len(new), 100):
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(new[start : start + 100])
        if todo.configs:
            await set_topic_configs(
                admin, {t: {**c.kept, **c.wanted} for t, c in todo.configs.items()}
            )
        if todo.add:
            await create_acls(admin, todo.add)
        if todo.remove:
            await delete_acls(admin, todo.remove)
        await _until_in_effect(admin, policy, prefix)
        return todo


async def _until_group_coordinator(
    admin: AIOKafkaAdminClient, group: str, timeout_s: float = 30.0
) -> None:
    # A new cluster creates its offsets topic (__consumer_offsets) when the first consumer group
    # asks for its coordinator, and answers "coordinator not available" until it exists: the
    # services' first joins would log it as an aiokafka ERROR. Asking here, once, as the admin,
    # means every group finds its coordinator at once (a quiet start).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            await admin.find_coordinator(group)
            return
        except (CoordinatorNotAvailableError, NotCoordinatorError):
            if loop.time() > deadline:
                raise TimeoutError(
                    f"Kafka had no group coordinator within {timeout_s}s (offsets topic missing?)"
                ) from None
            await asyncio.sleep(0.2)


async def _until_in_effect(
    admin: AIOKafkaAdminClient, policy: BusPolicy, prefix: str, timeout_s: float = 15.0
) -> None:
    # The controller commits ACLs before the brokers' authorizers load them from the metadata
    # log: a client let in right after `apply` could still be refused. DescribeAcls answers
    # from the broker's authorizer, so once it shows the file, the file is in force.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        left = await plan(admin, policy, prefix)
        if not (left.add or left.remove):
            return
        if loop.time() > deadline:
            raise TimeoutError(f"the cluster did not show the applied ACLs within {timeout_s}s")
        await asyncio.sleep(0.1)


async def remove_prefix(settings: Settings, policy: BusPolicy, prefix: str) -> int:
    """Delete the ACLs the file grants behind ``prefix`` (a test tenant going away); returns how
    many there were. Topics are deleted by the caller."""
    async with admin_client(settings) as admin:
        managed = policy.managed(prefix)
        found = [
            b for b in await describe_acls(admin) if (b.resource_type, b.resource_name) in managed
        ]
        if found:
            await delete_acls(admin, found)
        return len(found)


async def set_passwords(settings: Settings, passwords: dict[str, str]) -> None:
    """Create or replace the SCRAM-SHA-512 credential of each user (as the super user)."""
    async with admin_client(settings) as admin:
        for user, password in passwords.items():
            await upsert_scram_user(admin, user, password)


# -- credentials of the principals ----------------------------------------------------------------
def write_secret(path: Path, text: str) -> None:
    """Write a secret file readable by its owner only (0600 from the first byte, then renamed
    into place, so no reader ever sees it half written or world-readable)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    partial.replace(path)


def ensure_password_files(folder: Path, principals: list[str]) -> dict[str, str]:
    """principal → password from ``folder/<principal>``; a missing file gets a random password.
    The folder is made 0700."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    passwords = {}
    for principal in principals:
        path = folder / principal
        if not path.exists():
            write_secret(path, secrets.token_urlsafe(24) + "\n")
        first = path.read_text().splitlines()
        if not first or not first[0]:
            raise ValueError(f"{path} is empty")
        passwords[principal] = first[0]
    return passwords


async def init_cluster(
    settings: Settings,
    policy: BusPolicy,
    credentials: Path,
    *,
    layout: TopicLayout | None = None,
    prefix: str = "",
) -> BusPlan:
    """A new cluster made ready for mlcp, as its super user: every principal of the file gets a
    SCRAM-SHA-512 credential with the password in ``credentials/<principal>`` (a random one when
    the file is missing), then the topics and ACLs are applied. Idempotent."""
    passwords = ensure_password_files(credentials, list(policy.principals))
    await set_passwords(settings, passwords)
    return await apply(settings, policy, prefix=prefix, layout=layout)
