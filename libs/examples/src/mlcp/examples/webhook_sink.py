"""A local recording webhook sink: a stand-in for Slack, WeCom and generic webhooks.

Used by the tests, the benchmark and the lifecycle demo. It records every POST and answers like
the real provider of the path it was posted to (a path containing ``wecom`` answers WeCom's
``{"errcode": 0}``, ``slack`` answers ``ok``, anything else ``{"ok": true}``), unless a script
says otherwise — 429 with Retry-After, WeCom 45009 / 93000, 500, a slow answer.

    python -m mlcp.examples.webhook_sink --port 9999 [--secret KEY]

HTTP: ``POST /<anything>`` records; ``GET /_sink/requests[?path=/slack]`` lists what was
received; ``DELETE /_sink/requests`` forgets; ``POST /_sink/script`` with
``{"path": "/wecom", "responses": [{"status": 200, "json": {"errcode": 45009}}, …]}`` queues
answers for a path (then the default answer again).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mlcp.contracts.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify


class Sink:
    """Records requests and answers from per-path scripts (in-process or as a process)."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret
        self.requests: list[dict[str, Any]] = []
        self._scripts: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self.app = Starlette(
            routes=[
                Route("/_sink/requests", self._list, methods=["GET", "DELETE"]),
                Route("/_sink/script", self._script_endpoint, methods=["POST"]),
                Route("/{path:path}", self._receive, methods=["POST"]),
            ]
        )

    def script(self, path: str, responses: list[dict[str, Any]]) -> None:
        """Queue answers for POSTs to ``path``: dicts with status, json/text, headers, delay_s."""
        self._scripts[path].extend(responses)  # {"delay_s": 2} alone: a slow default answer

    def received(self, path: str | None = None) -> list[dict[str, Any]]:
        """Recorded requests (to ``path`` only, if given), oldest first."""
        return [r for r in self.requests if path is None or r["path"] == path]

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        entry: dict[str, Any] = {
            "path": path,
            "query": request.url.query,
            "time": time.time(),
            "headers": dict(request.headers),
            "bytes": len(body),
        }
        try:
            entry["json"] = json.loads(body)
        except ValueError:
            entry["text"] = body.decode("utf-8", errors="replace")
        if self.secret is not None:
            signature = request.headers.get(SIGNATURE_HEADER, "")
            timestamp = request.headers.get(TIMESTAMP_HEADER, "")
            entry["signature_valid"] = verify(self.secret, timestamp, body, signature)
        script = self._scripts.get(path)
        answer = script.popleft() if script else None
        entry["answered"] = (answer or {}).get("status", 200)
        self.requests.append(entry)
        if answer is not None and answer.get("delay_s"):
            await asyncio.sleep(float(answer["delay_s"]))
        if answer is not None and answer.keys() & {"status", "json", "text", "headers"}:
            headers = {str(k): str(v) for k, v in answer.get("headers", {}).items()}
            status = int(answer.get("status", 200))
            if "json" in answer:
                return JSONResponse(answer["json"], status_code=status, headers=headers)
            return PlainTextResponse(answer.get("text", ""), status_code=status, headers=headers)
        if "wecom" in path:
            return JSONResponse({"errcode": 0, "errmsg": "ok"})
        if "slack" in path:
            return PlainTextResponse("ok")
        return JSONResponse({"ok": True})

    async def _list(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.requests.clear()
            return JSONResponse({"cleared": True})
        return JSONResponse(self.received(request.query_params.get("path")))

    async def _script_endpoint(self, request: Request) -> Response:
        spec = await request.json()
        self.script(str(spec["path"]), list(spec["responses"]))
        return JSONResponse({"queued": len(spec["responses"])})


@contextlib.asynccontextmanager
async def serve(sink: Sink, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``sink`` in the running loop; yields its base URL (``port=0``: any free port)."""
    server = uvicorn.Server(
        uvicorn.Config(sink.app, host=host, port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError(f"the sink could not listen on {host}:{port}")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        await task


def main() -> None:
    """``python -m mlcp.examples.webhook_sink``: serve a sink until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--secret", default=None, help="HMAC key to verify webhook signatures")
    args = parser.parse_args()
    sink = Sink(args.secret)
    print(f"mlcp sink listening on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(sink.app, host=args.host, port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
