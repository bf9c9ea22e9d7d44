"""The client an inference service holds: follow the aliases, route, predict, log.

``AsyncModelClient`` lives in the service's event loop (FastAPI, aiohttp …); ``ModelClient``
runs the same thing in a background thread for synchronous code (Flask, scripts). Both are
context managers. docs/serving.md shows the few lines a service needs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from mlcp.artifacts import ArtifactLimits, ArtifactPolicy, open_store
from mlcp.client.follower import AliasFollower, Served, Serving
from mlcp.client.logger import PredictionLogger
from mlcp.client.models import ModelCache
from mlcp.client.settings import ClientSettings

T = TypeVar("T")

Predict = Callable[[Any, Mapping[str, Any]], tuple[Any, float | None]]
"""(model, features) → (prediction, probability or None)."""


def default_predict(model: Any, features: Mapping[str, Any]) -> tuple[Any, float | None]:
    """One row through a scikit-learn style estimator: columns in its fitted order."""
    names = list(getattr(model, "feature_names_in_", features.keys()))
    row = [[features[name] for name in names]]
    try:
        import pandas as pd  # type: ignore[import-untyped]  # keeps the fitted feature names

        frame: Any = pd.DataFrame(row, columns=names)
    except ImportError:  # pragma: no cover - scikit-learn models come with pandas around
        frame = row
    prediction = model.predict(frame)[0]
    probability = None
    if hasattr(model, "predict_proba"):
        probability = float(max(model.predict_proba(frame)[0]))
    return (prediction.item() if hasattr(prediction, "item") else prediction), probability


@dataclass(frozen=True)
class Prediction:
    """An answer and who made it."""

    request_id: str
    prediction: Any
    probability: float | None
    version: str
    alias: str
    latency_ms: float


class AsyncModelClient:
    """One model, as an inference service sees it (create, ``await start()`` or ``async with``)."""

    def __init__(
        self,
        model: str,
        *,
        settings: ClientSettings | None = None,
        policy: ArtifactPolicy | None = None,
        follow_kafka: bool = True,
        log_predictions: bool = True,
        batch_rows: int = 1000,
        max_age_s: float = 1.0,
        max_buffered: int = 100_000,
        on_full: Literal["drop", "block"] = "drop",
        source: str | None = None,
        http: httpx.AsyncClient | None = None,
        predict: Predict = default_predict,
    ) -> None:
        self.settings = settings or ClientSettings.from_env()
        self.model = model
        store = open_store(self.settings.artifact_root)
        self.models = ModelCache(store, policy=policy, limits=ArtifactLimits.from_env())
        self.follower = AliasFollower(
            self.settings, model, self.models, http=http, follow_kafka=follow_kafka
        )
        self.logger = (
            PredictionLogger(
                self.settings,
                model,
                source=source or f"mlcp-client/{model}",
                batch_rows=batch_rows,
                max_age_s=max_age_s,
                max_buffered=max_buffered,
                on_full=on_full,
            )
            if log_predictions
            else None
        )
        self._predict = predict

    async def start(self) -> None:
        """Start logging and following (reads the aliases once before returning)."""
        if self.logger is not None:
            await self.logger.start()
        await self.follower.start()

    async def close(self) -> None:
        """Flush the prediction log and stop following."""
        await self.follower.close()
        if self.logger is not None:
            await self.logger.close()

    async def __aenter__(self) -> AsyncModelClient:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def serving(self) -> Serving:
        """What serves now (an immutable snapshot)."""
        return self.follower.serving

    @property
    def ready(self) -> bool:
        """A version is loaded and can answer."""
        serving = self.follower.serving
        return serving.production is not None or serving.canary is not None

    def route(self, key: str) -> Served:
        """The version that answers ``key`` (sticky); ``LookupError`` when none serves."""
        return self.follower.serving.split.route(key)[1]

    def log(
        self,
        served: Served,
        *,
        request_id: str,
        features: Mapping[str, Any],
        prediction: Any,
        latency_ms: float,
        probability: float | None = None,
        error: bool = False,
    ) -> bool:
        """Log one prediction made by ``served`` (never blocks); False if it was dropped."""
        if self.logger is None:
            return False
        return self.logger.log(
            request_id=request_id,
            version=served.version,
            alias=served.alias,
            features=features,
            prediction=prediction,
            probability=probability,
            latency_ms=latency_ms,
            error=error,
        )

    def predict(
        self, features: Mapping[str, Any], *, key: str | None = None, request_id: str | None = None
    ) -> Prediction:
        """Route by ``key`` (default: the request id), predict, log; the answer names the
        version. A model error is logged (error=true) and raised."""
        request_id = request_id or uuid.uuid4().hex
        served = self.route(key or request_id)  # one snapshot for the whole request
        started = time.perf_counter()
        try:
            prediction, probability = self._predict(served.model, features)
        except Exception:
            latency = (time.perf_counter() - started) * 1000
            self.log(served, request_id=request_id, features=features, prediction=None,
                     latency_ms=latency, error=True)  # fmt: skip
            raise
        latency = (time.perf_counter() - started) * 1000
        self.log(served, request_id=request_id, features=features, prediction=prediction,
                 probability=probability, latency_ms=latency)  # fmt: skip
        return Prediction(
            request_id, prediction, probability, served.version, served.alias, latency
        )

    def feedback(self, request_id: str, label: Any, *, version: str | None = None) -> None:
        """Report the true label of an earlier request (sent off the request path)."""
        if self.logger is not None:
            self.logger.feedback(request_id=request_id, label=label, version=version)


class ModelClient:
    """``AsyncModelClient`` for synchronous code: its loop runs in a daemon thread."""

    def __init__(self, model: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"mlcp-client-{model}", daemon=True
        )
        self._thread.start()

        async def build() -> AsyncModelClient:
            return AsyncModelClient(model, **options)

        self.inner = self._call(build())

    def _call(self, work: Coroutine[Any, Any, T], timeout: float | None = 60.0) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(work, self._loop)
        return future.result(timeout)

    def start(self) -> ModelClient:
        """Start following and logging; returns once the aliases were read."""
        self._call(self.inner.start())
        return self

    def close(self) -> None:
        """Flush the prediction log, stop following, end the thread."""
        try:
            self._call(self.inner.close(), timeout=None)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> ModelClient:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def ready(self) -> bool:
        """A version is loaded and can answer."""
        return self.inner.ready

    def route(self, key: str) -> Served:
        """See ``AsyncModelClient.route``."""
        return self.inner.route(key)

    def predict(
        self, features: Mapping[str, Any], *, key: str | None = None, request_id: str | None = None
    ) -> Prediction:
        """See ``AsyncModelClient.predict`` (runs in the caller's thread)."""
        return self.inner.predict(features, key=key, request_id=request_id)

    def log(self, served: Served, **row: Any) -> bool:
        """See ``AsyncModelClient.log``."""
        return self.inner.log(served, **row)

    def feedback(self, request_id: str, label: Any, *, version: str | None = None) -> None:
        """See ``AsyncModelClient.feedback``."""
        self.inner.feedback(request_id, label, version=version)
