"""The bus is authenticated and authorised (real Kafka, SASL/SCRAM + ACLs from acls.yaml): a
principal cannot write a topic it does not own, read with another service's group, or connect
without credentials; a consumer refuses an event from a source its topic does not allow; a
service with a wrong password stops at once with one clear line; a rotated password works and
the old one is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
)
from pydantic import SecretStr

from mlcp.contracts import (
    GatePassed,
    dlq_topic,
    encode_event,
    new_event,
)
from mlcp.policy.acl import load_policy
from mlcp.runtime.kafka import BusAccessError, check_access, durable_producer, make_consumer
from mlcp.runtime.settings import settings_from_env
from tests.conftest import Infra, free_port, wait_for
from tests.integration.kafka_tools import read_all

pytestmark = pytest.mark.integration

PRINCIPALS = ["pipeline", "inference", "operator", *(f"svc-{s}" for s in
              ("registry", "trainer", "gatekeeper", "monitor", "notifier"))]  # fmt: skip


@pytest.fixture
def secured(infra: Infra) -> Infra:
    if not infra.authenticated:
        pytest.skip("the bus under test has no authentication")
    return infra


async def test_only_the_owner_may_write_a_topic(secured: Infra, unique: str) -> None:
    prefix = f"t{unique}."
    policy = load_policy()
    refused: dict[str, set[str]] = {}
    accepted: dict[str, set[str]] = {}
    for principal in PRINCIPALS:
        producer = durable_producer(
            secured.settings(principal, topic_prefix=prefix),
            client_id=f"probe-{principal}",
            request_timeout_ms=10_000,
        )
        try:
            await producer.start()
        except ClusterAuthorizationFailedError:
            # A principal that may write nothing does not even get a producer id.
            assert not any(principal in a.write for a in policy.topics.values())
            for every in policy.topics:
                refused.setdefault(every, set()).add(principal)
            await producer.stop()
            continue
        try:
            for topic in policy.topics:
                record = b'{"forged": true}'
                try:
                    await producer.send_and_wait(prefix + topic, record, key=b"churn")
                    accepted.setdefault(topic, set()).add(principal)
                except TopicAuthorizationFailedError:
                    refused.setdefault(topic, set()).add(principal)
        finally:
            await producer.stop()
    assert policy.topics, "the bus policy names no topic"
    for topic, access in policy.topics.items():
        assert accepted.get(topic, set()) == set(access.write), topic
        assert refused[topic] == set(PRINCIPALS) - set(access.write), topic
    # What the broker refused never reached a consumer: each topic holds only the owner's
    # one record.
    for topic in ("mlcp.approval.granted.v1", "mlcp.gate.passed.v1", "mlcp.canary.healthy.v1"):
        assert len(await read_all(secured.admin, prefix + topic)) == 1


async def test_without_credentials_nobody_connects(secured: Infra) -> None:
    plaintext = settings_from_env(
        {
            "MLCP_KAFKA_BOOTSTRAP": secured.kafka_bootstrap,
            "MLCP_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        }
    )
    with pytest.raises(BusAccessError, match="requires SASL"):
        await check_access(plaintext, timeout_s=5)
    wrong = secured.settings("pipeline").model_copy(
        update={"kafka_password_file": None, "kafka_password": SecretStr("not-the-password")}
    )
    with pytest.raises(BusAccessError, match="refused principal 'pipeline'"):
        await check_access(wrong, timeout_s=5)
    nobody = wrong.model_copy(update={"kafka_username": "mallory"})
    with pytest.raises(BusAccessError, match="refused principal 'mallory'"):
        await check_access(nobody, timeout_s=5)


async def test_a_consumer_cannot_use_another_services_group(secured: Infra, unique: str) -> None:
    prefix = f"t{unique}."
    notifier = secured.settings("svc-notifier", topic_prefix=prefix)
    topic = notifier.topic("mlcp.gate.failed.v1")  # a topic the notifier may read …
    consumer = make_consumer(
        notifier,
        topic,
        group_id=notifier.group_id("registry"),  # … but not in the registry's group
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )

    async def join() -> None:
        await consumer.start()
        await asyncio.wait_for(consumer.getone(), 30)

    try:
        with pytest.raises(GroupAuthorizationFailedError, match="mlcp-registry"):
            await join()
    finally:
        await consumer.stop()


async def test_an_event_from_an_unexpected_source_is_dead_lettered(
    secured: Infra, unique: str, tmp_path: Path, spawn: Any
) -> None:
    """The gatekeeper's principal may write gate.passed, but an event claiming to come from
    the monitor is refused by the registry: DLQ, reason unexpected_source."""
    prefix = f"t{unique}."
    port = free_port()
    env = {
        **secured.env("svc-registry", prefix=prefix),
        "MLCP_DB_SCHEMA": f"registry_{unique}",
        "MLCP_HTTP_PORT": str(port),
        "MLCP_LOG_FORMAT": "text",
    }
    proc = spawn(["-m", "mlcp.registry"], env, "registry")

    async def ready() -> bool:
        assert proc.popen.poll() is None, proc.output()
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(ready, timeout=90, what="the registry's /readyz")
    forged = new_event(
        GatePassed(model="churn", version="1.0.0", stages=("approve",)), source="mlcp/monitor"
    )
    gatekeeper = secured.settings("svc-gatekeeper", topic_prefix=prefix)
    producer = durable_producer(gatekeeper, client_id="probe")
    await producer.start()
    try:
        await producer.send_and_wait(
            gatekeeper.topic(forged.type), encode_event(forged), key=b"churn"
        )
    finally:
        await producer.stop()

    async def letters() -> list[Any]:
        return await read_all(secured.admin, dlq_topic(gatekeeper.topic(forged.type)))

    [letter] = await wait_for(letters, timeout=60, what="the dead letter")
    headers = dict(letter.headers)
    assert headers["mlcp-dlq-reason"] == b"unexpected_source"
    assert b"'mlcp/monitor' may not emit mlcp.gate.passed.v1" in headers["mlcp-dlq-error"]
    assert letter.value == encode_event(forged)


async def test_a_wrong_password_stops_the_service_with_one_clear_line(
    secured: Infra, tmp_path: Path, spawn: Any
) -> None:
    secret = "this-is-not-the-password"
    wrong = tmp_path / "password"
    wrong.write_text(secret + "\n")
    env = {
        **secured.env("svc-gatekeeper"),
        "MLCP_KAFKA_PASSWORD_FILE": str(wrong),
        "MLCP_HTTP_PORT": "0",
        "MLCP_STARTUP_TIMEOUT_S": "60",
    }
    proc = spawn(["-m", "mlcp.gatekeeper"], env, "gatekeeper")
    # Refused credentials are not a reason to wait out the 60 s start-up timeout.
    assert await proc.wait_exit(timeout=45) == 2, proc.output()
    output = proc.output()
    assert "refused principal 'svc-gatekeeper'" in output
    assert secured.kafka_bootstrap in output
    assert "MLCP_KAFKA_PASSWORD_FILE" in output
    assert secret not in output
    assert "Traceback" not in output


async def test_a_rotated_password_works_after_restart_and_the_old_one_is_refused(
    secured: Infra, unique: str, spawn: Any
) -> None:
    from mlcp.devstack import rotate_password

    if secured.source != "devstack":
        pytest.skip("rotating a password is the dev stack's command")
    principal = "svc-notifier"
    settings = secured.settings(principal)
    old = settings.kafka_secret()
    assert old is not None
    await asyncio.to_thread(rotate_password, principal)
    new = settings.kafka_secret()  # the file now holds the new password
    assert new is not None
    assert new != old
    old_settings = settings.model_copy(
        update={"kafka_password_file": None, "kafka_password": SecretStr(old)}
    )
    with pytest.raises(BusAccessError):
        await check_access(old_settings, timeout_s=5)
    assert await check_access(settings, timeout_s=5) is None
    # A service started afterwards reads the new password from its file and runs.
    port = free_port()
    env = {
        **secured.env(principal, prefix=f"t{unique}."),
        "MLCP_DB_SCHEMA": f"notifier_{unique}",
        "MLCP_HTTP_PORT": str(port),
        "MLCP_SLACK_WEBHOOK_URL": "http://127.0.0.1:9/slack",
        "MLCP_WECOM_WEBHOOK_URL": "http://127.0.0.1:9/wecom?key=k",
    }
    proc = spawn(["-m", "mlcp.notifier"], env, "notifier")

    async def ready() -> bool:
        assert proc.popen.poll() is None, proc.output()
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(ready, timeout=90, what="the notifier with its new password")
