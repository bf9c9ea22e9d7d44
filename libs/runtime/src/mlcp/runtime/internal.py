"""Internal HTTP APIs: answered only to clients on the networks ``MLCP_INTERNAL_API_CLIENTS``
names (loopback by default).

The gatekeeper's and the monitor's read APIs show operators what those services know (a
candidate's DAG state, a model's live windows). They are diagnostics, not the product's API —
the registry's API, with its tokens and roles, is — and they cannot check a registry token
without asking the registry or copying its credentials, which services never do. So they answer
only where the operator already is: on the service's own host (or the networks allowed).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from mlcp.runtime.problem import problem_response

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> list[Network]:
    """Comma-separated addresses or CIDR blocks; ``ValueError`` names the bad one."""
    networks = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or CIDR block") from None
    return networks


def client_allowed(host: str | None, networks: Sequence[Network]) -> bool:
    """Whether a peer address is inside one of ``networks`` (IPv4-mapped IPv6 counts as IPv4)."""
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class InternalOnly:
    """ASGI wrapper: 403 (a problem document) for an HTTP client outside ``networks``."""

    def __init__(self, app: ASGIApp, networks: Sequence[Network]) -> None:
        self._app = app
        self._networks = list(networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            if not client_allowed(client[0] if client else None, self._networks):
                detail = (
                    "an internal API: it answers only clients on the networks in "
                    "MLCP_INTERNAL_API_CLIENTS (default: loopback); use the registry's API"
                )
                await problem_response(403, detail, instance=scope.get("path"))(
                    scope, receive, send
                )
                return
        await self._app(scope, receive, send)
