"""Loading a version's model: fetched through the artifact store, sha256 verified, scanned and
loaded only by ``mlcp.artifacts``' restricted loader; kept in memory by digest."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlcp.artifacts import ArtifactLimits, ArtifactPolicy, ArtifactStore, load_artifact


@dataclass(frozen=True)
class ArtifactRef:
    """Where a version's model is and what its bytes must hash to."""

    uri: str
    sha256: str
    format: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ArtifactRef:
        """From the registry's ``artifact`` object."""
        return cls(str(body["uri"]), str(body["sha256"]), str(body["format"]))


class ModelCache:
    """Models by artifact digest; a digest is loaded once, the least recently used dropped."""

    def __init__(
        self,
        store: ArtifactStore,
        *,
        policy: ArtifactPolicy | None = None,
        limits: ArtifactLimits | None = None,
        keep: int = 4,
    ) -> None:
        self._store = store
        self._policy = policy or ArtifactPolicy()
        self._limits = limits or ArtifactLimits.from_env()
        self._keep = keep
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, artifact: ArtifactRef) -> Any:
        """The model stored at ``artifact``; ``ArtifactRefused`` when it must not be loaded
        (wrong sha256, unsafe content, over a limit, outside the root)."""
        with self._lock:
            if artifact.sha256 in self._models:
                self._models.move_to_end(artifact.sha256)
                return self._models[artifact.sha256]
        model = load_artifact(
            artifact.uri,
            artifact.sha256,
            artifact.format,
            store=self._store,
            policy=self._policy,
            limits=self._limits,
        )
        with self._lock:
            self._models[artifact.sha256] = model
            while len(self._models) > self._keep:
                self._models.popitem(last=False)
        return model
