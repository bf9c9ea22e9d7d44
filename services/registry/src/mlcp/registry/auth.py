"""Bearer tokens of the registry API: issuing, hashing, verifying, and who a caller is.

A token is ``mlcp_<id>_<secret>``: the id finds the row, the 256-bit secret is checked against
its scrypt hash (per-token salt), so a copy of the database reveals no usable token. scrypt is
deliberately slow (~50 ms); a verified token is remembered in process memory by the sha256 of
the whole token, so each token pays that once per process and an inference service polling an
alias pays nothing more. The token's row (principal, revocation, grants with their expiry) is
kept in the registry's read cache (``cache.py``), which every token or grant change drops in
every registry process through NOTIFY, so revocation takes effect at once; grant expiry is
compared with the clock on every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi.security.utils import get_authorization_scheme_param
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from mlcp.registry import domain, problems
from mlcp.registry.cache import ReadCache, token_scope
from mlcp.registry.store import tokens
from mlcp.runtime.db import TRANSIENT_DB_ERRORS

BOOTSTRAP_PRINCIPAL = "bootstrap-admin"
_TOKEN = re.compile(r"^mlcp_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_CACHE_LIMIT = 10_000


class RegistrySettings(BaseSettings):
    """Environment settings only the registry reads (prefix ``MLCP_REGISTRY_``)."""

    model_config = SettingsConfigDict(
        env_prefix="MLCP_REGISTRY_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    bootstrap_token: SecretStr | None = Field(None, min_length=32)
    """An admin token for the first start (create real tokens with it, then unset it)."""


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: who, and the roles of their live grants."""

    principal: str
    roles: tuple[str, ...]
    token_id: str | None


class Unauthenticated(Exception):
    """No token, a malformed or unknown token, or a revoked one (HTTP 401)."""


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """``scrypt$<salt hex>$<digest hex>`` of a token secret."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches a ``hash_secret`` value (constant-time comparison)."""
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    try:
        expected = hash_secret(secret, bytes.fromhex(salt_hex))
    except ValueError:
        return False
    return hmac.compare_digest(expected.split("$")[2], digest_hex)


def new_token() -> tuple[str, str, str]:
    """A fresh token: (id, the full token shown once to its owner, the hash to store)."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return token_id, f"mlcp_{token_id}_{secret}", hash_secret(secret)


class Authenticator:
    """Turns a presented bearer token into a ``Caller``."""

    def __init__(
        self, *, bootstrap_token: str | None = None, cache: ReadCache | None = None
    ) -> None:
        self._bootstrap = bootstrap_token
        self._verified: dict[str, str] = {}  # sha256(token) → token id
        self._cache = cache

    async def caller(self, pool: Callable[[], Any], presented: str | None) -> Caller:
        """The caller behind ``presented``; ``Unauthenticated`` when it proves nothing.

        ``pool()`` is the database pool, acquired from only when the token's row is not cached.
        """
        if not presented:
            raise Unauthenticated("missing bearer token")
        if self._is_bootstrap(presented):
            return Caller(BOOTSTRAP_PRINCIPAL, ("admin",), None)
        match = _TOKEN.match(presented)
        if match is None:
            raise Unauthenticated("malformed bearer token")
        token_id, secret = match.groups()
        row = await self._token_row(pool, token_id)
        if row is None:
            raise Unauthenticated("unknown token")
        if row["revoked_at"] is not None:
            raise Unauthenticated("token revoked")
        fingerprint = hashlib.sha256(presented.encode()).hexdigest()
        if self._verified.get(fingerprint) != token_id:
            ok = await asyncio.to_thread(verify_secret, secret, row["secret_hash"])
            if not ok:
                raise Unauthenticated("unknown token")
            if len(self._verified) >= _CACHE_LIMIT:
                self._verified.clear()
            self._verified[fingerprint] = token_id
        return _identify(row, token_id)

    def cached_caller(self, presented: str) -> Caller | None:
        """The caller behind ``presented`` when memory alone proves it — the bootstrap token, or
        a token already verified whose row is cached; None means: ask :meth:`caller`."""
        if self._is_bootstrap(presented):
            return Caller(BOOTSTRAP_PRINCIPAL, ("admin",), None)
        match = _TOKEN.match(presented)
        if match is None or self._cache is None:
            return None
        token_id = match.group(1)
        row: dict[str, Any] | None = self._cache.get(token_scope(token_id))
        if row is None or row["revoked_at"] is not None:
            return None
        if self._verified.get(hashlib.sha256(presented.encode()).hexdigest()) != token_id:
            return None
        return _identify(row, token_id)

    def _is_bootstrap(self, presented: str) -> bool:
        return self._bootstrap is not None and hmac.compare_digest(
            presented.encode(), self._bootstrap.encode()
        )

    async def _token_row(self, pool: Callable[[], Any], token_id: str) -> dict[str, Any] | None:
        async def load() -> dict[str, Any] | None:
            async with pool().acquire() as conn:
                return await tokens.token_auth(conn, token_id)

        if self._cache is None:
            return await load()
        scope = token_scope(token_id)
        row: dict[str, Any] | None = self._cache.get(scope)
        return row if row is not None else await self._cache.fill(scope, "", load)


def _identify(row: dict[str, Any], token_id: str) -> Caller:
    # Grant expiry against the clock of this request, whether the row came from cache or not.
    grants = list(zip(row["roles"], row["expires"], row["revoked"], strict=True))
    roles = domain.active_roles(grants, datetime.now(UTC))
    return Caller(row["principal"], tuple(roles), token_id)


# --- the API's gate ----------------------------------------------------------------------------

PERMISSION_KEY = "x-required-permission"
AUTHENTICATED = "authenticated"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="mlcp"'}


def presented_token(headers: Headers) -> str | None:
    """The bearer token of ``Authorization: Bearer <token>``, or None."""
    scheme, token = get_authorization_scheme_param(headers.get("authorization"))
    return token if scheme.lower() == "bearer" and token else None


class AuthenticateFirst:
    """ASGI middleware of the API: who is calling, and may they, before anything else.

    For a request that names an operation (path and method), the caller is authenticated (401)
    and the operation's ``x-required-permission`` checked (403) before FastAPI reads the body or
    validates a parameter: whoever has no right to an operation learns nothing from its
    validation errors, and a request without a token gets 401 whatever its body. The caller is
    left in ``scope["state"]["caller"]`` for the route. Unknown paths and methods go on to
    FastAPI's 404 / 405; the OpenAPI document and its viewers stay public.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Callable[[], list[BaseRoute]],
        auth: Authenticator,
        pool: Callable[[], Any],
    ) -> None:
        self._app = app
        self._routes = routes
        self._auth = auth
        self._pool = pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        permission = self._permission(scope) if scope["type"] == "http" else None
        if permission is None:
            await self._app(scope, receive, send)
            return
        path = scope.get("path")
        try:
            caller = await self._auth.caller(self._pool, presented_token(Headers(scope=scope)))
        except Unauthenticated as exc:
            await problems.problem(401, str(exc), instance=path, headers=CHALLENGE)(
                scope, receive, send
            )
            return
        except TRANSIENT_DB_ERRORS as exc:
            await problems.unavailable(path, exc)(scope, receive, send)
            return
        if permission != AUTHENTICATED and not domain.allowed(caller.roles, permission):  # type: ignore[arg-type]
            roles = ", ".join(caller.roles) or "none"
            detail = f"{caller.principal} (roles: {roles}) lacks the {permission!r} permission"
            await problems.problem(403, detail, instance=path)(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self._app(scope, receive, send)

    def _permission(self, scope: Scope) -> str | None:
        for route in self._routes():
            match, _ = route.matches(scope)
            if match is Match.FULL:
                extra = getattr(route, "openapi_extra", None) or {}
                permission = extra.get(PERMISSION_KEY)
                return None if permission is None else str(permission)
        return None
