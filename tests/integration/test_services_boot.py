"""Each of the five services starts as a process against real Kafka and PostgreSQL, reports
ready, exposes its metrics, stops cleanly on SIGTERM, and refuses a bad configuration clearly."""

from __future__ import annotations

import signal
import socket
from typing import Any

import httpx
import pytest

from tests.conftest import Infra, free_port, wait_for

pytestmark = pytest.mark.integration

SERVICES = ["registry", "trainer", "gatekeeper", "monitor", "notifier"]


def service_env(infra: Infra, service: str, **extra: str) -> dict[str, str]:
    """The service as its own bus principal, on the stack's own topics."""
    return {**infra.env(f"svc-{service}"), "MLCP_LOG_FORMAT": "json", **extra}


@pytest.mark.parametrize("service", SERVICES)
async def test_service_boots_ready_and_stops_on_sigterm(
    infra: Infra, spawn: Any, service: str
) -> None:
    port = free_port()
    proc = spawn(
        ["-m", f"mlcp.{service}"], service_env(infra, service, MLCP_HTTP_PORT=str(port)), service
    )
    base = f"http://127.0.0.1:{port}"

    async def ready() -> dict[str, Any] | None:
        assert proc.popen.poll() is None, f"{service} exited:\n{proc.output()}"
        try:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"{base}/readyz", timeout=2)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    body = await wait_for(ready, timeout=60, what=f"{service} /readyz")
    assert body == {
        "service": service,
        "ready": True,
        "checks": {"database": True, "kafka": True, "consumer": True},
    }
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{base}/healthz")).json()["status"] == "up"
        metrics = (await client.get(f"{base}/metrics")).text
    assert f"mlcp_{service}_outbox_published_total" in metrics
    assert f"mlcp_{service}_events_handled_total" in metrics

    proc.popen.send_signal(signal.SIGTERM)
    assert await proc.wait_exit(timeout=30) == 0, proc.output()
    assert f"{service} stopped" in proc.output()


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"MLCP_HTTP_PORT": "99999"}, "MLCP_HTTP_PORT"),
        ({"MLCP_DATABASE_URL": "mysql://nope"}, "MLCP_DATABASE_URL"),
        ({"MLCP_LOG_LEVEL": "LOUD"}, "MLCP_LOG_LEVEL"),
        (
            {
                "MLCP_DATABASE_URL": "postgresql://x:y@127.0.0.1:1/none",
                "MLCP_STARTUP_TIMEOUT_S": "1",
            },
            "MLCP_DATABASE_URL",
        ),
        (
            {"MLCP_KAFKA_BOOTSTRAP": "127.0.0.1:1", "MLCP_STARTUP_TIMEOUT_S": "1"},
            "MLCP_KAFKA_BOOTSTRAP",
        ),
    ],
)
async def test_bad_configuration_exits_2_naming_the_variable(
    infra: Infra, spawn: Any, env: dict[str, str], names: str
) -> None:
    proc = spawn(
        ["-m", "mlcp.gatekeeper"],
        service_env(infra, "gatekeeper", **{"MLCP_HTTP_PORT": "0", **env}),
        "bad",
    )
    assert await proc.wait_exit(timeout=60) == 2, proc.output()
    output = proc.output()
    assert names in output
    assert "Traceback" not in output
    assert "y@" not in output, "the database password is never printed"


async def test_taken_port_exits_2_before_connecting(infra: Infra, spawn: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = spawn(
            ["-m", "mlcp.trainer"], service_env(infra, "trainer", MLCP_HTTP_PORT=str(port)), "taken"
        )
        assert await proc.wait_exit(timeout=60) == 2, proc.output()
    output = proc.output()
    assert f"cannot listen on 127.0.0.1:{port}" in output
    assert "Traceback" not in output
    assert "applied migrations" not in output, "the port is checked before anything else"
