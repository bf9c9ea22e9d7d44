"""The platform YAML (``MLCP_CONFIG``): models, their approval DAGs, rollout and notifications.

One file, one schema, validated the same way by every service (each reads the part it needs), so
two services can never disagree about what the file means. Any error stops the start with the
path of the field, e.g. ``models.churn.gates[2].depends_on: unknown stage 'qualty'``.
deploy/mlcp.example.yaml is a full, commented example; each service's doc (docs/*.md) lists the
keys it reads.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from mlcp.artifacts.policy import ArtifactPolicy, parse_trusted
from mlcp.contracts.common import OPERATORS
from mlcp.policy.errors import ConfigurationError
from mlcp.policy.target import Target

_NAME = r"^[a-z0-9][a-z0-9._-]{0,127}$"
Name = Annotated[str, Field(pattern=_NAME)]

# --- values written as strings in the YAML -------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> timedelta:
    """``"30m"``, ``"24h"``, ``"1.5d"``, ``"500ms"`` or a number of seconds → timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a duration like 30s, 30m, 24h or 7d")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return timedelta(seconds=seconds)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda d: f"{d.total_seconds():g}s", return_type=str),
]

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_THRESHOLD = re.compile(rf"^\s*(>=|<=|==|!=|>|<)\s*({_NUMBER})\s*$")


class Threshold(BaseModel):
    """A comparison such as ``>= 0.92``: ``holds(observed)`` says whether a value satisfies it."""

    model_config = ConfigDict(frozen=True)

    operator: Literal[">=", ">", "<=", "<", "==", "!="]
    value: float

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            match = _THRESHOLD.match(data)
            if match is None:
                raise ValueError(f"{data!r} is not a threshold like '>= 0.92' or '< 200'")
            return {"operator": match.group(1), "value": float(match.group(2))}
        return data

    def holds(self, observed: float) -> bool:
        """True when ``observed <operator> value``."""
        return OPERATORS[self.operator](observed, self.value)

    def __str__(self) -> str:
        return f"{self.operator} {self.value:g}"


class _Strict(BaseModel):
    # Unknown keys are errors: a typo ("min_new_row") must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- models --------------------------------------------------------------------------------------


class RetrainPolicy(_Strict):
    """When the trainer asks for a new run."""

    min_new_rows: int = Field(1000, ge=1)
    drift_cooldown: Duration = timedelta(minutes=30)


class DriftPolicy(_Strict):
    """Per-feature drift thresholds and the dataset-level rule (Evidently's defaults)."""

    psi: float = Field(0.2, gt=0)
    ks_pvalue: float = Field(0.05, gt=0, lt=1)
    share_of_features: float = Field(0.5, gt=0, le=1)
    window_size: int = Field(1000, ge=10)
    window_max_age: Duration = timedelta(hours=1)
    features: dict[str, float] = Field(default_factory=dict)
    """Per-feature PSI threshold overrides."""


GateKind = Literal["metrics", "data_quality", "baseline", "security_scan", "external", "manual"]


class GateStage(_Strict):
    """One stage of a model's approval DAG."""

    name: Name
    kind: GateKind
    depends_on: list[Name] = Field(default_factory=list)
    require: dict[str, Threshold] = Field(default_factory=dict)
    """metrics / data_quality: metric → threshold."""
    metric: str | None = None
    """baseline: the metric compared with the production version."""
    min_absolute_change: float | None = None
    min_relative_change: float | None = None
    higher_is_better: bool = True
    timeout: Duration | None = None
    """external: how long to wait for the report before the stage fails."""
    expires: Duration | None = None
    """manual: how long the approval request stays open."""
    check: str | None = None
    """external: the check name CI reports (defaults to the stage name)."""

    @model_validator(mode="before")
    @classmethod
    def _trusted_moved(cls, data: Any) -> Any:
        # A stage-level list once trusted module prefixes for the scan alone; trust is now exact
        # names that every loader must share, so it lives with the model.
        if isinstance(data, dict) and "trusted" in data:
            raise ValueError(
                f"stage {data.get('name')!r}: 'trusted' moved to the model's "
                "artifact.trusted (exact names such as sklearn.tree._tree.Tree)"
            )
        return data

    @model_validator(mode="after")
    def _kind_fields(self) -> Self:
        if self.kind in ("metrics", "data_quality") and not self.require:
            raise ValueError(f"stage {self.name!r} of kind {self.kind} needs 'require'")
        if self.kind == "baseline" and not self.metric:
            raise ValueError(f"stage {self.name!r} of kind baseline needs 'metric'")
        if self.kind == "data_quality":
            unknown = sorted(set(self.require) - set(DATA_QUALITY_MEASURES))
            if unknown:
                raise ValueError(
                    f"stage {self.name!r} of kind data_quality: unknown measure "
                    f"require.{unknown[0]} (known: {', '.join(DATA_QUALITY_MEASURES)})"
                )
        if self.min_absolute_change is not None and self.min_absolute_change < 0:
            raise ValueError(f"stage {self.name!r}: min_absolute_change must be >= 0")
        if self.min_relative_change is not None and not 0 <= self.min_relative_change <= 1:
            raise ValueError(f"stage {self.name!r}: min_relative_change must be between 0 and 1")
        # A key that the stage's kind ignores is a mistake (a timeout on a manual stage would
        # silently never fire), so it is refused like an unknown key.
        for key in sorted(self.model_fields_set & set(_KIND_ONLY)):
            default = type(self).model_fields[key].get_default(call_default_factory=True)
            if self.kind not in _KIND_ONLY[key] and getattr(self, key) != default:
                raise ValueError(
                    f"stage {self.name!r} of kind {self.kind} does not take {key!r} "
                    f"(only {', '.join(_KIND_ONLY[key])})"
                )
        return self


DATA_QUALITY_MEASURES = ("completeness", "rows", "batches")
"""What a data_quality stage can require of the training batches of a version."""

_KIND_ONLY: dict[str, tuple[str, ...]] = {
    "require": ("metrics", "data_quality"),
    "metric": ("baseline",),
    "min_absolute_change": ("baseline",),
    "min_relative_change": ("baseline",),
    "higher_is_better": ("baseline",),
    "timeout": ("external",),
    "expires": ("manual",),
    "check": ("external",),
}


class BakePolicy(_Strict):
    """How long a canary is watched before it can be called healthy."""

    min_predictions: int = Field(500, ge=1)
    max_duration: Duration = timedelta(minutes=30)


class RolloutPolicy(_Strict):
    """Canary traffic, bake window, degradation limits and the rollback window."""

    canary_percent: int = Field(10, ge=0, le=100)
    """0: a version that passes its gates goes straight to production."""
    bake: BakePolicy = Field(default_factory=BakePolicy)
    degrade_if: dict[str, Threshold] = Field(
        default_factory=lambda: {
            "error_rate": Threshold(operator=">", value=0.05),
            "latency_p95_ms": Threshold(operator=">", value=250),
            "accuracy_drop": Threshold(operator=">", value=0.03),
        }
    )
    rollback_window: Duration = timedelta(hours=24)


class ArtifactRules(_Strict):
    """How a model's artifacts may be stored: read alike by the gate's security_scan and every
    loader (trainer baseline, inference). See docs/security.md."""

    allow_pickle: bool = False
    """Accept pickle / joblib artifacts (still only under the exact allow-list). Off: only
    formats that cannot execute code (skops)."""
    trusted: list[str] = Field(default_factory=list)
    """Exact names added to the allow-list for this model: ``module.Name`` or
    ``module:Qualified.Name`` (pickle globals and skops types alike), e.g.
    ``sklearn.tree._tree.Tree``. Never a module prefix."""

    @field_validator("trusted")
    @classmethod
    def _exact_names(cls, names: list[str]) -> list[str]:
        for name in names:
            parse_trusted(name)
        return names

    def policy(self) -> ArtifactPolicy:
        """These rules as the artifact library's policy."""
        return ArtifactPolicy(allow_pickle=self.allow_pickle, trusted=frozenset(self.trusted))


class ModelConfig(_Strict):
    """Everything the platform knows about one model."""

    dataset: Name
    label: str = Field(min_length=1)
    target: Target = Field(default_factory=Target)
    """How predictions and labels compare (classification / regression), for the monitor's live
    accuracy and the trainer's holdout accuracy alike (mlcp.policy.target)."""
    features: Literal["auto"] | list[str] = "auto"
    train: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    """The training entrypoint, ``module:callable``."""
    params: dict[str, Any] = Field(default_factory=dict)
    retrain: RetrainPolicy = Field(default_factory=RetrainPolicy)
    drift: DriftPolicy = Field(default_factory=DriftPolicy)
    gates: list[GateStage] = Field(default_factory=list)
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)
    artifact: ArtifactRules = Field(default_factory=ArtifactRules)

    @model_validator(mode="after")
    def _dag(self) -> Self:
        validate_dag(self.gates)
        return self


def validate_dag(stages: list[GateStage]) -> None:
    """Unique names, known dependencies, no cycle; errors name the stage."""
    names = [s.name for s in stages]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"gates: two stages are named {name!r}")
        seen.add(name)
    for stage in stages:
        for dep in stage.depends_on:
            if dep not in seen:
                raise ValueError(f"gates: stage {stage.name!r} depends_on unknown stage {dep!r}")
            if dep == stage.name:
                raise ValueError(f"gates: stage {stage.name!r} depends on itself")
    graph = {s.name: list(s.depends_on) for s in stages}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = [*path[path.index(node) :], node]
            raise ValueError(f"gates: cycle {' -> '.join(cycle)}")
        state[node] = 1
        for dep in graph[node]:
            visit(dep, [*path, node])
        state[node] = 2

    for name in names:
        visit(name, [])


# --- notifications -------------------------------------------------------------------------------


class Channel(_Strict):
    """Where alerts go. The URL itself is a secret: it comes from an environment variable."""

    kind: Literal["slack", "wecom", "webhook"]
    url_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    secret_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    """webhook: the variable holding the HMAC-SHA256 signing key."""
    rate_per_minute: float | None = Field(None, gt=0)
    """Overrides the channel kind's default (Slack 60, WeCom 20)."""
    language: Literal["en", "zh"] = "en"
    msgtype: Literal["markdown", "text"] | None = None
    """wecom: the group robot's message type, ``markdown`` (≤ 4096 bytes, the default) or
    ``text`` (≤ 2048 bytes; shown by every client, including WeChat)."""

    @model_validator(mode="after")
    def _wecom_only(self) -> Self:
        if self.msgtype is not None and self.kind != "wecom":
            raise ValueError(f"msgtype is for wecom channels, not {self.kind}")
        return self


class Route(_Strict):
    """Which events (short names such as ``gate.failed``) go to which channels."""

    events: list[str] = Field(min_length=1)
    channels: list[str] = Field(min_length=1)
    models: list[Name] | None = None
    min_severity: Literal["info", "warning", "critical"] = "info"


class Notifications(_Strict):
    """Channels and routing rules of the notifier."""

    channels: dict[Name, Channel] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _routes_name_channels(self) -> Self:
        for i, route in enumerate(self.routes):
            for channel in route.channels:
                if channel not in self.channels:
                    raise ValueError(f"routes[{i}]: unknown channel {channel!r}")
        return self


class PlatformConfig(_Strict):
    """The whole ``MLCP_CONFIG`` file."""

    models: dict[Name, ModelConfig] = Field(default_factory=dict)
    notifications: Notifications = Field(default_factory=Notifications)

    def model(self, name: str) -> ModelConfig:
        """A model's configuration, or ``KeyError`` with the known names."""
        try:
            return self.models[name]
        except KeyError:
            known = sorted(self.models)
            raise KeyError(f"model {name!r} is not configured (known: {known})") from None

    def target(self, name: str) -> Target:
        """A model's target; the default (classification, ``type: auto``) when not configured."""
        found = self.models.get(name)
        return found.target if found else Target()

    def models_fed_by(self, dataset: str) -> list[str]:
        """The models whose training data is ``dataset``."""
        return sorted(name for name, m in self.models.items() if m.dataset == dataset)


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def parse_platform_config(text: str, *, source: str = "MLCP_CONFIG") -> PlatformConfig:
    """Parse YAML text; ``ConfigurationError`` names the file and each bad field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{source}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{source}: the top level must be a mapping")
    try:
        return PlatformConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors()[:10]:
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{_location(tuple(error['loc']))}: {message}")
        details = "\n  ".join(lines)
        raise ConfigurationError(f"{source}: invalid configuration:\n  {details}") from None


def load_platform_config(path: Path | None) -> PlatformConfig:
    """Read ``MLCP_CONFIG``; without a path the platform has no models (an empty config)."""
    if path is None:
        return PlatformConfig()
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"MLCP_CONFIG={path}: cannot read: {exc.strerror}") from None
    return parse_platform_config(text, source=f"MLCP_CONFIG={path}")
