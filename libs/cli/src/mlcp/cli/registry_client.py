"""A small synchronous client of the registry's HTTP API for the CLI, with its error mapping.

Every failure becomes a ``CliError`` carrying the message to print and the exit code, so the
commands never show a traceback: 1 the registry refused (401/403/404/409/412/422), 2 usage or
configuration (no token, bad URL), 3 the registry could not be reached or failed (connection,
timeout, 5xx, an answer that is not JSON). The token goes only into the ``Authorization``
header; no message ever contains it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

DEFAULT_URL = "http://127.0.0.1:8081"
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
# What an HTTP header value may hold; anything else is refused before sending (never echoed).
_TOKEN_CHARS = re.compile(r"^[!-~]{1,4096}$")
_REFUSALS = {
    401: "not authenticated",
    403: "forbidden",
    404: "not found",
    409: "conflict",
    412: "precondition failed",
    422: "invalid input",
}
_HINTS = {
    401: "check MLCP_TOKEN / --token",
    412: "the alias moved since you read it; look again before acting",
}


class CliError(Exception):
    """A failure the CLI reports as one line on stderr and an exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def check_url(url: str) -> str:
    """The registry base URL without a trailing slash; ``CliError`` (exit 2) if unusable."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(
            f"registry URL {url!r} is not an http(s) URL (--registry / MLCP_REGISTRY_URL)",
            EXIT_USAGE,
        )
    return url.strip().rstrip("/")


def check_token(token: str | None) -> str:
    """The token to send; ``CliError`` (exit 2) when missing or not sendable (never shown)."""
    if token is None or not token.strip():
        raise CliError("no registry token: set MLCP_TOKEN or pass --token", EXIT_USAGE)
    token = token.strip()
    if not _TOKEN_CHARS.match(token):
        raise CliError(
            "the registry token contains spaces or control characters (value not shown)",
            EXIT_USAGE,
        )
    return token


def path(*segments: str) -> str:
    """``/a/b/c`` with every segment percent-encoded (a slash in a name cannot change the
    route; the registry then answers 404/422 for it)."""
    return "/" + "/".join(quote(s, safe="") for s in segments)


def describe_detail(body: Any) -> str:
    """The registry's error ``detail`` as one readable line (FastAPI validation lists too)."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if not isinstance(item, dict):
                parts.append(str(item))
                continue
            loc = [str(p) for p in item.get("loc", []) if p != "body"]
            where = ".".join(loc)
            parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", "")))
        return "; ".join(parts)
    return ""


def refusal(response: httpx.Response) -> CliError:
    """The ``CliError`` for a non-2xx answer."""
    status = response.status_code
    try:
        text = describe_detail(response.json())
    except ValueError:
        text = ""
    text = text or response.reason_phrase or "no details"
    if status in _REFUSALS:
        hint = f" ({_HINTS[status]})" if status in _HINTS else ""
        return CliError(f"{_REFUSALS[status]} ({status}): {text}{hint}", EXIT_REFUSED)
    if 400 <= status < 500:
        return CliError(f"the registry refused the request ({status}): {text}", EXIT_REFUSED)
    return CliError(f"the registry failed ({status}): {text}", EXIT_UNREACHABLE)


class RegistryClient:
    """GET and POST JSON on the registry; every failure is a ``CliError``."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = check_url(url)
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {check_token(token)}"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def get(self, route: str, params: dict[str, Any] | None = None) -> Any:
        """The JSON answer of ``GET route?params`` (None-valued parameters left out)."""
        return self.get_tagged(route, params)[0]

    def get_tagged(
        self, route: str, params: dict[str, Any] | None = None
    ) -> tuple[Any, str | None]:
        """The JSON answer and its ``ETag`` header (None when there is none)."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return self._call("GET", route, params=query)

    def post(
        self, route: str, body: dict[str, Any] | None, headers: dict[str, str] | None = None
    ) -> Any:
        """The JSON answer of ``POST route`` with ``body`` (None-valued fields left out)."""
        payload = None if body is None else {k: v for k, v in body.items() if v is not None}
        return self._call("POST", route, json=payload, headers=headers)[0]

    def _call(self, method: str, route: str, **kwargs: Any) -> tuple[Any, str | None]:
        try:
            response = self._client.request(method, route, **kwargs)
        except httpx.TimeoutException:
            raise CliError(
                f"the registry at {self.url} did not answer in time", EXIT_UNREACHABLE
            ) from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise CliError(
                f"cannot reach the registry at {self.url}: {reason}", EXIT_UNREACHABLE
            ) from None
        if not response.is_success:
            raise refusal(response)
        try:
            return response.json(), response.headers.get("etag")
        except ValueError:
            raise CliError(
                f"the registry at {self.url} answered {response.status_code} without JSON "
                "(is this the mlcp registry?)",
                EXIT_UNREACHABLE,
            ) from None
