"""The registry's HTTP API (FastAPI), mounted on the runtime's HTTP server.

One module of routes per resource: ``models`` (models and versions), ``aliases`` (resolving,
history, promotion, rollback), ``approvals`` (manual stages and external checks), ``audit``,
``tokens`` (and ``/whoami``); what they share is in ``common``. Routes stay thin: authenticate
and check the permission, validate, load, decide (``transitions``), save and emit through the
outbox. Every route declares its permission in the OpenAPI document (``x-required-permission``),
which the RBAC matrix test reads.
"""

from typing import Any

from fastapi import FastAPI

from mlcp.policy.platform import PlatformConfig
from mlcp.registry import problems
from mlcp.registry.api import aliases, approvals, audit, models, tokens
from mlcp.registry.api.common import Context
from mlcp.registry.audit import AuditTrail
from mlcp.registry.auth import AuthenticateFirst, Authenticator
from mlcp.registry.cache import ReadCache
from mlcp.registry.ports import Ports
from mlcp.runtime import ServiceRuntime


def create_api(
    runtime: ServiceRuntime,
    auth: Authenticator,
    config: PlatformConfig,
    ports: Ports,
    cache: ReadCache,
    audit_trail: AuditTrail,
) -> FastAPI:
    """The API app; it reaches the database through ``runtime`` once the runtime has started."""
    api = FastAPI(
        title="mlcp registry",
        version="1.0.0",
        description="Models, versions, aliases, approvals and the audit log of mlcp. "
        "Every call needs `Authorization: Bearer <token>`; each operation names its "
        "permission in `x-required-permission`. Errors are RFC 9457 problem documents "
        "(`application/problem+json`).",
    )

    def pool() -> Any:
        return runtime.pool

    problems.install(api)
    problems.document(api)
    api.add_middleware(AuthenticateFirst, routes=lambda: api.router.routes, auth=auth, pool=pool)
    ctx = Context(runtime, config, ports, cache, audit_trail)
    # Routes are added to the app itself, not included as routers: AuthenticateFirst matches
    # a request against the app's own route list to find the operation's permission.
    tokens.add_whoami(api)
    models.add_routes(api, ctx)
    aliases.add_routes(api, ctx)
    approvals.add_routes(api, ctx)
    audit.add_routes(api, ctx)
    tokens.add_routes(api, ctx)
    return api
