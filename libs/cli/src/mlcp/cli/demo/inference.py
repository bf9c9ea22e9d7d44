"""A stand-in for an inference service: serves the registry's aliases, logs to the bus.

It does what a real one does: reads which version serves (``production`` / ``canary`` alias,
through the registry API), loads that version's artifact through ``mlcp.artifacts``' restricted
loader (sha256 verified, scanned, the model's allow-list), predicts, and emits ``PredictionLogged``
per request and ``FeedbackReceived`` when the true label is known. Requests are split between
canary and production by the canary's ``traffic_percent``; with no production yet, the canary
serves everything.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from mlcp.artifacts import (
    ArtifactLimits,
    ArtifactPolicy,
    ArtifactStore,
    FileStore,
    load_artifact,
)
from mlcp.contracts import (
    CANARY,
    PRODUCTION,
    FeedbackReceived,
    PredictionLogged,
    encode_event,
    new_event,
    utcnow,
)
from mlcp.runtime.kafka import durable_producer, encode_headers
from mlcp.runtime.settings import Settings, load_artifact_limits


@dataclass(frozen=True)
class Served:
    """A version behind an alias, loaded."""

    alias: str
    version: str
    traffic_percent: int
    estimator: Any


@dataclass
class Traffic:
    """What one ``serve`` call sent, per version."""

    predictions: dict[str, int] = field(default_factory=dict)
    correct: dict[str, int] = field(default_factory=dict)
    labelled: dict[str, int] = field(default_factory=dict)

    def accuracy(self, version: str) -> float | None:
        """Live accuracy of ``version`` over the labelled requests of this call."""
        n = self.labelled.get(version, 0)
        return self.correct.get(version, 0) / n if n else None


def load_estimator(
    artifact: dict[str, Any], store: ArtifactStore, policy: ArtifactPolicy, limits: ArtifactLimits
) -> Any:
    """The artifact's estimator, through the one restricted loader."""
    return load_artifact(
        artifact["uri"],
        artifact["sha256"],
        artifact["format"],
        store=store,
        policy=policy,
        limits=limits,
    )


class Inference:
    """Routes requests to the serving versions of one model and logs them."""

    def __init__(
        self,
        settings: Settings,
        registry_url: str,
        token: str,
        model: str,
        label: str,
        policy: ArtifactPolicy | None = None,
    ) -> None:
        self._settings = settings
        self._artifacts = FileStore(settings.artifact_root.expanduser())
        self._policy = policy or ArtifactPolicy()
        self._limits = load_artifact_limits()
        self._model = model
        self._label = label
        self._http = httpx.AsyncClient(
            base_url=registry_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        self._producer = durable_producer(settings, client_id="mlcp-demo-inference")
        self._loaded: dict[str, Any] = {}  # artifact sha256 → estimator
        self._routed = 0

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()
        await self._http.aclose()

    async def resolve(self, alias: str) -> Served | None:
        """The version the registry's ``alias`` points to, with its estimator (None if unset)."""
        response = await self._http.get(f"/models/{self._model}/aliases/{alias}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body = response.json()
        artifact = body["artifact"]
        if artifact["sha256"] not in self._loaded:
            self._loaded[artifact["sha256"]] = await asyncio.to_thread(
                load_estimator, artifact, self._artifacts, self._policy, self._limits
            )
        return Served(
            alias,
            body["version"],
            int(body["traffic_percent"] or 0),
            self._loaded[artifact["sha256"]],
        )

    async def serve(self, rows: Any, *, feedback_for: str | None) -> Traffic:
        """Answer one request per row of ``rows`` (a DataFrame with the label column) with the
        versions the registry serves now; emit their PredictionLogged, and FeedbackReceived for
        the requests served through the alias ``feedback_for`` (labels are collected for the
        version under evaluation)."""
        canary = await self.resolve(CANARY)
        production = await self.resolve(PRODUCTION)
        if canary is None and production is None:
            raise RuntimeError(f"no version of {self._model} is serving")
        features = rows.drop(columns=[self._label])
        labels = [int(v) for v in rows[self._label]]
        answers = await asyncio.to_thread(self._predict_all, features, canary, production)
        traffic = Traffic()
        sends = []
        for (served, prediction, probability, latency_ms), label, (_, row) in zip(
            answers, labels, features.iterrows(), strict=True
        ):
            request_id = f"req-{uuid.uuid4().hex}"
            now = utcnow()
            logged = PredictionLogged(
                model=self._model,
                version=served.version,
                alias=served.alias,
                request_id=request_id,
                features={str(k): float(v) for k, v in row.items()},
                prediction=prediction,
                probability=probability,
                latency_ms=latency_ms,
                ts=now,
            )
            sends.append(await self._send(logged))
            v = served.version
            traffic.predictions[v] = traffic.predictions.get(v, 0) + 1
            if served.alias == feedback_for:
                truth = FeedbackReceived(
                    model=self._model, version=v, request_id=request_id, label=label, ts=now
                )
                sends.append(await self._send(truth))
                traffic.labelled[v] = traffic.labelled.get(v, 0) + 1
                traffic.correct[v] = traffic.correct.get(v, 0) + int(prediction == label)
        await asyncio.gather(*sends)  # every record acknowledged (acks=all)
        return traffic

    def _predict_all(
        self, features: Any, canary: Served | None, production: Served | None
    ) -> list[tuple[Served, int, float, float]]:
        # One request at a time, as a service answers them: the latency is one row's predict.
        out = []
        for i in range(len(features)):
            served = self._route(canary, production)
            row = features.iloc[[i]]
            began = time.perf_counter()
            proba = served.estimator.predict_proba(row)[0]
            prediction = int(served.estimator.classes_[proba.argmax()])
            latency_ms = (time.perf_counter() - began) * 1000
            out.append((served, prediction, float(proba.max()), latency_ms))
        return out

    def _route(self, canary: Served | None, production: Served | None) -> Served:
        # Deterministic split: request n goes to the canary when the running share of canary
        # requests would otherwise fall below its traffic percent.
        self._routed += 1
        if canary is None:
            assert production is not None
            return production
        if production is None:
            return canary
        n, pct = self._routed, canary.traffic_percent
        return canary if (n * pct) // 100 > ((n - 1) * pct) // 100 else production

    async def _send(self, data: Any) -> asyncio.Future[Any]:
        event = new_event(data, source="mlcp/demo-inference")
        future: asyncio.Future[Any] = await self._producer.send(
            self._settings.topic(event.type),
            value=encode_event(event),
            key=event.subject.encode() if event.subject else None,
            headers=encode_headers({"content-type": "application/cloudevents+json"}),
        )
        return future
