"""Following a model's aliases: which version serves as ``production`` and ``canary``.

Three sources, fastest first: ``model.promoted`` / ``model.rolled_back`` read from Kafka
without a consumer group (a change is seen within a second), the registry's alias endpoint
revalidated with its ETag (what the event means, with the artifact to load), and polling of
that endpoint (the fallback when Kafka is unreachable, and a safety net). A change is loaded
first and then swapped in as one immutable ``Serving`` object: a request that took the previous
one finishes on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from mlcp.artifacts import ArtifactRefused
from mlcp.client.kafka import make_reader
from mlcp.client.models import ArtifactRef, ModelCache
from mlcp.client.router import Split
from mlcp.client.settings import ClientSettings
from mlcp.contracts import topics

log = logging.getLogger("mlcp.client")

ALIASES = ("production", "canary")


@dataclass(frozen=True)
class Served:
    """One version behind an alias, loaded."""

    alias: str
    version: str
    traffic_percent: float
    artifact: ArtifactRef
    model: Any = field(repr=False, compare=False)


@dataclass(frozen=True)
class Serving:
    """What serves now: swapped as a whole, never changed in place."""

    production: Served | None = None
    canary: Served | None = None

    @property
    def split(self) -> Split[Served]:
        """The routing split of this state."""
        percent = self.canary.traffic_percent if self.canary is not None else 0.0
        return Split(self.production, self.canary, percent)

    def version_of(self, alias: str) -> str | None:
        """The version behind ``alias``, or None."""
        served = self.production if alias == "production" else self.canary
        return None if served is None else served.version


@dataclass
class FollowerStats:
    """What the follower saw, for metrics and tests."""

    refreshes: int = 0
    changes: int = 0
    events: int = 0
    refused: int = 0
    """Versions whose artifact was refused (the previous version kept serving)."""
    last_refusal: str | None = None
    last_causes: tuple[str, ...] = ()
    registry_errors: int = 0
    kafka_live: bool = False
    last_change_monotonic: float | None = None


class AliasFollower:
    """Keeps ``serving`` current for one model (async; start it in the service's loop)."""

    def __init__(
        self,
        settings: ClientSettings,
        model: str,
        models: ModelCache,
        *,
        http: httpx.AsyncClient | None = None,
        follow_kafka: bool = True,
        poll_interval_s: float = 30.0,
        fallback_poll_interval_s: float = 2.0,
    ) -> None:
        self.model = model
        self._settings = settings
        self._models = models
        self._own_http = http is None
        headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self._http = http or httpx.AsyncClient(
            base_url=settings.registry_url, headers=headers, timeout=5.0
        )
        self._follow_kafka = follow_kafka
        self._poll_interval_s = poll_interval_s
        self._fallback_poll_interval_s = fallback_poll_interval_s
        self._etags: dict[str, str] = {}
        # Artifacts refused once are not fetched again (a refusal is about the bytes, which a
        # registered version never changes); the version keeps being reported as refused.
        self._refused: dict[ArtifactRef, str] = {}
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._kafka_ready = asyncio.Event()
        self.serving = Serving()
        self.stats = FollowerStats()

    async def start(self) -> None:
        """Read both aliases once, then follow the bus and poll in the background."""
        if self._follow_kafka:
            self._tasks.append(asyncio.create_task(self._watch(), name="mlcp-alias-watch"))
            # Listen before the first read: a change between the two is not missed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kafka_ready.wait(), 10.0)
        try:
            await self.refresh()
        except httpx.HTTPError as exc:
            log.warning("registry unreachable at start (%s); polling", exc)
        self._tasks.append(asyncio.create_task(self._poll(), name="mlcp-alias-poll"))

    async def close(self) -> None:
        """Stop following."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._own_http:
            await self._http.aclose()

    async def refresh(self, expect: dict[str, str | None] | None = None) -> bool:
        """Revalidate both aliases with the registry and swap in what changed; True when the
        serving state changed. ``expect`` (alias → version an event announced) retries briefly
        until the registry's answer agrees."""
        deadline = time.monotonic() + 2.0
        while True:
            async with self._lock:
                changed = await self._refresh_once()
            if not expect or all(
                self.serving.version_of(a) == v or v in self._refused.values()
                for a, v in expect.items()
            ):
                return changed
            if time.monotonic() >= deadline:
                log.warning("registry did not confirm %s for %s", expect, self.model)
                return changed
            await asyncio.sleep(0.02)

    async def _refresh_once(self) -> bool:
        self.stats.refreshes += 1
        current = self.serving
        updated = {alias: getattr(current, alias) for alias in ALIASES}
        for alias in ALIASES:
            headers = {}
            etag = self._etags.get(alias)
            if etag is not None and updated[alias] is not None:
                headers["If-None-Match"] = etag
            try:
                response = await self._http.get(
                    f"/models/{self.model}/aliases/{alias}", headers=headers
                )
            except httpx.HTTPError:
                self.stats.registry_errors += 1
                raise
            if response.status_code == 304:
                continue
            if response.status_code == 404:
                updated[alias] = None
                self._etags.pop(alias, None)
                continue
            if response.status_code != 200:
                self.stats.registry_errors += 1
                log.warning(
                    "registry answered %s for %s/%s: %s",
                    response.status_code,
                    self.model,
                    alias,
                    response.text[:200],
                )
                continue
            body = response.json()
            loaded = await self._load(alias, body, updated[alias])
            if loaded is not None:
                updated[alias] = loaded
                self._etags[alias] = response.headers.get("etag", "")
        fresh = Serving(updated["production"], updated["canary"])
        if fresh == current:
            return False
        self.serving = fresh  # one reference swap: atomic for every reader
        self.stats.changes += 1
        self.stats.last_change_monotonic = time.monotonic()
        log.info(
            "%s serves production=%s canary=%s",
            self.model,
            fresh.version_of("production"),
            fresh.version_of("canary"),
        )
        return True

    async def _load(
        self, alias: str, body: dict[str, Any], previous: Served | None
    ) -> Served | None:
        """The alias' new version loaded, or None to keep ``previous`` (refused artifact)."""
        artifact = ArtifactRef.from_json(body["artifact"])
        percent = float(body.get("traffic_percent") or (100 if alias == "production" else 0))
        if previous is not None and previous.artifact == artifact:
            model = previous.model
        elif artifact in self._refused:
            return None
        else:
            try:
                model = await asyncio.to_thread(self._models.load, artifact)
            except ArtifactRefused as exc:
                self._refused[artifact] = str(body["version"])
                self.stats.refused += 1
                self.stats.last_refusal = f"{body['version']}: {exc}"
                self.stats.last_causes = exc.causes
                log.error(
                    "%s %s %s refused, %s keeps serving: %s",
                    self.model,
                    alias,
                    body["version"],
                    previous.version if previous else "nothing",
                    exc,
                )
                return None
        return Served(alias, str(body["version"]), percent, artifact, model)

    async def _poll(self) -> None:
        while True:
            live = self._follow_kafka and self.stats.kafka_live
            await asyncio.sleep(self._poll_interval_s if live else self._fallback_poll_interval_s)
            try:
                await self.refresh()
            except Exception as exc:  # keep serving what we have; try again next time
                log.warning("alias poll of %s failed: %s", self.model, exc)

    async def _watch(self) -> None:
        names = {
            self._settings.topic(topics.MODEL_PROMOTED),
            self._settings.topic(topics.MODEL_ROLLED_BACK),
        }
        backoff = 0.5
        while True:
            reader = make_reader(self._settings, *sorted(names))
            try:
                await reader.start()
                # Assigned partitions, positioned at the end: a change from now on is seen.
                while not reader.assignment():
                    await asyncio.sleep(0.01)
                for partition in reader.assignment():
                    await reader.position(partition)
                self.stats.kafka_live = True
                self._kafka_ready.set()
                backoff = 0.5
                async for record in reader:
                    expect = self._announced(record.value)
                    if expect is not None:
                        self.stats.events += 1
                        try:
                            await self.refresh(expect)
                        except Exception as exc:
                            log.warning("refresh after an event failed: %s", exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("alias events unreachable (%s); polling the registry", exc)
            finally:
                self.stats.kafka_live = False
                self._kafka_ready.set()  # do not hold start() on an unreachable bus
                with contextlib.suppress(Exception):
                    await reader.stop()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    def _announced(self, raw: bytes | None) -> dict[str, str | None] | None:
        """alias → version an event of this model announces; None for other models or junk."""
        try:
            event = json.loads(raw or b"")
            data = event["data"]
            if data.get("model") != self.model:
                return None
            if event["type"] == topics.MODEL_PROMOTED:
                return {str(data["alias"]): str(data["version"])}
            if event["type"] == topics.MODEL_ROLLED_BACK:
                to = data.get("to_version")
                return {str(data["alias"]): None if to is None else str(to)}
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignored an alias event that does not parse")
        return None
