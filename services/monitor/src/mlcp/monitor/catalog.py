"""What the monitor's handlers share: the platform config as the monitor reads it, and the
registered versions it has parsed (layout of the reference profile, metrics, lifecycle)."""

from __future__ import annotations

from dataclasses import dataclass

from mlcp.contracts import ReferenceProfile
from mlcp.monitor.domain import Lifecycle
from mlcp.monitor.drift import Layout
from mlcp.monitor.ports import VersionStore
from mlcp.policy.platform import DriftPolicy, PlatformConfig, RolloutPolicy
from mlcp.policy.target import Target


@dataclass(frozen=True)
class Version:
    """A registered version as the monitor uses it (immutable: cached for good)."""

    layout: Layout
    metrics: dict[str, float]
    lifecycle: Lifecycle


class Catalog:
    """Per-model policies (defaults for a model the config does not list) and a cache of the
    versions' parsed profiles."""

    def __init__(self, config: PlatformConfig) -> None:
        self._config = config
        self.strict = frozenset(name for name, m in config.models.items() if m.target.strict)
        """Models whose target refuses some values (a declared type, or a regression)."""
        # Versions are immutable once registered: their parsed profiles can be cached forever.
        self._versions: dict[tuple[str, str], Version] = {}

    def drift_policy(self, model: str) -> DriftPolicy:
        """The model's drift policy."""
        found = self._config.models.get(model)
        return found.drift if found else DriftPolicy()

    def rollout_policy(self, model: str) -> RolloutPolicy:
        """The model's rollout policy."""
        found = self._config.models.get(model)
        return found.rollout if found else RolloutPolicy()

    def target(self, model: str) -> Target:
        """How the model's predictions and labels compare."""
        return self._config.target(model)

    async def version(self, versions: VersionStore, model: str, version: str) -> Version | None:
        """A registered version (loaded and parsed once), or None when it is not registered."""
        key = (model, version)
        found = self._versions.get(key)
        if found is None:
            info = await versions.get(model, version)
            if info is None:
                return None
            profile = ReferenceProfile.model_validate(info.reference_profile)
            found = self._versions[key] = Version(Layout(profile), info.metrics, info.lifecycle)
        return found
