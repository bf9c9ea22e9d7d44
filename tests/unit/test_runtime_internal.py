"""Internal read APIs (gatekeeper, monitor) answer only clients on the allowed networks."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from mlcp.gatekeeper.app import build as build_gatekeeper
from mlcp.runtime.internal import InternalOnly, client_allowed, parse_networks
from mlcp.runtime.settings import ConfigurationError, Settings, load_settings

pytestmark = pytest.mark.unit

LOOPBACK = parse_networks(Settings().internal_api_clients)


def test_loopback_is_the_default_and_mapped_addresses_count() -> None:
    for host in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        assert client_allowed(host, LOOPBACK), host
    for host in ("10.0.0.5", "172.18.0.3", "::ffff:10.0.0.5", "2001:db8::1", "nonsense", None):
        assert not client_allowed(host, LOOPBACK), host
    assert client_allowed("172.18.0.3", parse_networks("127.0.0.1, 172.18.0.0/16"))


def test_a_bad_network_stops_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLCP_INTERNAL_API_CLIENTS", "127.0.0.1,10.0.0.0/33")
    with pytest.raises(ConfigurationError, match="MLCP_INTERNAL_API_CLIENTS"):
        load_settings()


async def _get(app: object, client: tuple[str, int]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=client)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
        return await http.get("/candidates/churn/1.0.0")


async def test_other_clients_get_a_403_problem_document() -> None:
    async def answer(_: object) -> JSONResponse:
        return JSONResponse({"status": "running"})

    app = InternalOnly(Starlette(routes=[Route("/candidates/{m}/{v}", answer)]), LOOPBACK)
    assert (await _get(app, ("127.0.0.1", 5000))).json() == {"status": "running"}
    refused = await _get(app, ("10.1.2.3", 5000))
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert "MLCP_INTERNAL_API_CLIENTS" in refused.json()["detail"]


async def test_the_gatekeeper_mounts_its_read_api_as_internal() -> None:
    runtime = build_gatekeeper(Settings())
    refused = await _get(runtime.http_app(), ("10.1.2.3", 5000))
    assert refused.status_code == 403
    health = httpx.ASGITransport(app=runtime.http_app(), client=("10.1.2.3", 5000))
    async with httpx.AsyncClient(transport=health, base_url="http://svc") as http:
        assert (
            await http.get("/healthz")
        ).status_code == 200  # Prometheus and probes still reach it
