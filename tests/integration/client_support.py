"""Builders for the client's integration tests: real model artifacts, the client's settings on
the test bus, and a switchable TCP path to Kafka (the bus "down", then "back")."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path
from typing import Any

from mlcp.client import ClientSettings
from tests.conftest import Infra

FEATURES = ("x1", "x2")


def skops_model(root: Path, name: str, *, flip: bool = False) -> dict[str, str]:
    """A fitted LogisticRegression saved with skops under ``root``: its artifact reference."""
    import numpy as np
    import pandas as pd
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    frame = pd.DataFrame(rng.normal(size=(200, 2)), columns=list(FEATURES))
    labels = (frame["x1"] > 0) != flip
    path = root / f"{name}.skops"
    path.write_bytes(sio.dumps(LogisticRegression().fit(frame, labels)))
    return artifact(path)


def unsafe_model(root: Path, name: str) -> dict[str, str]:
    """A skops archive that would call ``os.system``: refused by the restricted loader."""
    import os

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    path = root / f"{name}.skops"
    path.write_bytes(sio.dumps(FunctionTransformer(func=os.system, kw_args={})))
    return artifact(path)


def artifact(path: Path, sha256: str | None = None) -> dict[str, str]:
    """The artifact reference of ``path`` (with its real digest unless ``sha256`` is given)."""
    digest = sha256 or hashlib.sha256(path.read_bytes()).hexdigest()
    return {"uri": path.as_uri(), "sha256": digest, "format": "skops"}


def client_settings(infra: Infra, prefix: str, root: Path, **overrides: Any) -> ClientSettings:
    """The client as the ``inference`` principal on the bus behind ``prefix``."""
    env = infra.kafka_env("inference", prefix=prefix)
    return ClientSettings.from_env(env, topic_prefix=prefix, artifact_root=str(root), **overrides)


class Switch:
    """A TCP path to Kafka's bootstrap address that can be cut and restored.

    Kafka's metadata then names the broker's own address, so only the bootstrap goes through
    here: with the switch open a client that has not connected yet cannot reach the bus.
    """

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._server: asyncio.Server | None = None
        self._port: int | None = None

    @property
    def address(self) -> str:
        assert self._port is not None
        return f"127.0.0.1:{self._port}"

    async def reserve(self) -> None:
        """Pick the port (closed until ``connect``)."""
        server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        self._port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()

    async def connect(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self._port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
