"""Hypothesis strategies for every event model; each draws valid values only."""

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

from hypothesis import strategies as st

from mlcp.contracts import (
    ArtifactRef,
    Baseline,
    BatchRef,
    CategoricalProfile,
    CloudEvent,
    DatasetRef,
    Environment,
    EventData,
    Evidence,
    FeatureDrift,
    FeatureSpec,
    NumericProfile,
    Quantile,
    ReferenceProfile,
    Window,
    audit,
    gate,
    inference,
    monitoring,
    new_event,
    registry,
    training,
)
from mlcp.contracts import data as data_events
from mlcp.contracts.types import (
    MAX_SAFE_INTEGER,
    BumpKind,
    CheckKind,
    CheckStatus,
    DriftMethod,
    Operator,
    PromotionCause,
    RollbackCause,
    TrainingReason,
)

_PRINTABLE = st.characters(min_codepoint=33, max_codepoint=126)
_WORDS = st.characters(
    categories=("L", "N", "P", "S", "Zs"), exclude_characters="\x85\xa0\u1680\u2028\u2029"
)


def _choice(literal: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(get_args(literal))


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


_LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"
_KEY_START = _LOWER + "ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
slugs = st.builds(str.__add__, st.sampled_from(_LOWER), st.text(_LOWER + "._-", max_size=20))
tokens = st.text(_PRINTABLE, min_size=1, max_size=40)
keys = st.builds(
    str.__add__, st.sampled_from(_KEY_START), st.text(_KEY_START + ".:/@-", max_size=20)
)
short_text = st.text(_WORDS, min_size=1, max_size=40).map(str.strip).filter(bool)
text = st.text(_WORDS | st.just("\n"), min_size=1, max_size=80).filter(lambda s: s.strip() != "")
feature_names = st.text(_WORDS, min_size=1, max_size=30).map(str.strip).filter(bool)
sha256s = st.binary(max_size=8).map(lambda b: hashlib.sha256(b).hexdigest())
uris = st.builds(
    lambda scheme, path: f"{scheme}://{path}", st.sampled_from(["s3", "file", "https"]), tokens
)
ratios = st.floats(0, 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
non_negative = st.floats(0, 1e12)
counts = st.integers(0, MAX_SAFE_INTEGER)
safe_ints = st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
scalars = st.booleans() | safe_ints | finite | st.text(max_size=30)
timestamps = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))]),
)
_prerelease = st.sampled_from(["", "-rc.1", "-alpha", "-beta.2.x-y"])
_build = st.sampled_from(["", "+build.7", "+sha.3f2a9c1"])
_parts = st.tuples(st.integers(0, 999), st.integers(0, 999), st.integers(0, 999))
semvers = st.builds(lambda p, pre, b: "{}.{}.{}".format(*p) + pre + b, _parts, _prerelease, _build)
metrics = st.dictionaries(keys, finite, max_size=5)
params = st.dictionaries(keys, st.none() | scalars, max_size=5)

feature_specs = st.builds(FeatureSpec, name=feature_names, dtype=tokens)
feature_schemas = st.lists(feature_specs, min_size=1, max_size=5, unique_by=lambda f: f.name)
artifacts = st.builds(ArtifactRef, uri=uris, sha256=sha256s, format=tokens, size_bytes=_opt(counts))
batch_refs = st.builds(
    BatchRef, batch_id=tokens, uri=uris, rows=st.integers(0, 10**9), sha256=sha256s
).map(lambda b: b.model_copy(update={"duplicates": len(b.batch_id) % 3}))


@st.composite
def dataset_refs(draw: st.DrawFn) -> DatasetRef:
    """A DatasetRef as older producers send it (ids only) or as the trainer does (batches)."""
    dataset, completeness = draw(slugs), draw(_opt(ratios))
    if draw(st.booleans()):
        return DatasetRef(
            dataset=dataset,
            batch_ids=draw(st.lists(tokens, min_size=1, max_size=5)),
            sha256=draw(sha256s),
            rows=draw(_opt(counts)),
            completeness=completeness,
        )
    batches = draw(st.lists(batch_refs, min_size=1, max_size=5))
    return DatasetRef(
        dataset=dataset,
        batch_ids=tuple(b.batch_id for b in batches),
        sha256=DatasetRef.fingerprint(b.sha256 for b in batches),
        rows=sum(b.rows for b in batches),
        completeness=completeness,
        batches=tuple(batches),
    )


baselines = st.builds(Baseline, version=semvers, metrics=metrics)
environments = st.builds(
    Environment,
    python=st.sampled_from(["3.11.9", "3.12.1"]),
    packages=st.dictionaries(slugs, tokens, max_size=4),
    platform=_opt(short_text),
)
evidence = st.builds(
    Evidence,
    metric=keys,
    observed=_opt(finite),
    operator=_choice(Operator),
    threshold=_opt(finite),
    satisfied=_opt(st.booleans()),
    detail=_opt(short_text),
)
evidence_lists = st.lists(evidence, max_size=4)


@st.composite
def windows(draw: st.DrawFn) -> Window:
    start = draw(timestamps)
    return Window(
        start=start,
        end=start + draw(st.timedeltas(timedelta(0), timedelta(days=2))),
        size=draw(counts),
    )


def _normalised(draw: st.DrawFn, n: int) -> list[float]:
    weights = draw(st.lists(st.floats(0.01, 1), min_size=n, max_size=n))
    total = sum(weights)
    return [w / total for w in weights]


@st.composite
def numeric_profiles(draw: st.DrawFn) -> NumericProfile:
    count = draw(st.integers(0, 10**6))
    edges: list[float] = []
    if count > 0 or draw(st.booleans()):
        edges = sorted(draw(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=8, unique=True)))
    qs = sorted(draw(st.lists(ratios, max_size=4, unique=True)))
    values = sorted(draw(st.lists(finite, min_size=len(qs), max_size=len(qs))))
    low, high = sorted(draw(st.tuples(finite, finite)))
    return NumericProfile(
        count=count,
        missing=draw(counts),
        min=low,
        max=high,
        mean=draw(_opt(finite)),
        std=draw(_opt(non_negative)),
        bin_edges=edges,
        bin_proportions=_normalised(draw, len(edges) - 1) if edges else [],
        quantiles=[Quantile(q=q, value=v) for q, v in zip(qs, values, strict=True)],
        sample=draw(st.lists(finite, max_size=10)),
    )


@st.composite
def categorical_profiles(draw: st.DrawFn) -> CategoricalProfile:
    categories = draw(st.lists(st.text(max_size=12), max_size=5, unique=True))
    shares = _normalised(draw, len(categories) + 1)
    return CategoricalProfile(
        count=draw(st.integers(1, 10**6)),
        missing=draw(counts),
        frequencies=dict(zip(categories, shares, strict=False)),
        other=shares[-1],
    )


def reference_profiles(names: list[str]) -> st.SearchStrategy[ReferenceProfile]:
    subset = st.lists(st.sampled_from(names), unique=True, max_size=len(names))
    return subset.flatmap(
        lambda chosen: st.builds(
            ReferenceProfile,
            rows=counts,
            features=st.fixed_dictionaries(
                {name: numeric_profiles() | categorical_profiles() for name in chosen}
            ),
        )
    )


@st.composite
def training_requested(draw: st.DrawFn) -> training.TrainingRequested:
    reason = draw(_choice(TrainingReason))
    needs = reason == "data_threshold"
    return training.TrainingRequested(
        model=draw(slugs),
        reason=reason,
        dataset=draw(_opt(slugs)),
        rows_since_last_run=draw(counts if needs else _opt(counts)),
        threshold=draw(counts if needs else _opt(counts)),
        trigger_event_ids=draw(st.lists(tokens, max_size=3)),
        requested_by=draw(_opt(short_text)),
    )


@st.composite
def run_finished(draw: st.DrawFn) -> training.RunFinished:
    schema = draw(feature_schemas)
    return training.RunFinished(
        run_id=draw(tokens),
        model=draw(slugs),
        reason=draw(_choice(TrainingReason)),
        params=draw(params),
        metrics=draw(metrics),
        baseline=draw(_opt(baselines)),
        datasets=draw(st.lists(dataset_refs(), min_size=1, max_size=2)),
        feature_schema=schema,
        label=draw(_opt(feature_names)),
        artifact=draw(artifacts),
        reference_profile=draw(reference_profiles([f.name for f in schema])),
        code_version=draw(tokens),
        entrypoint=draw(_opt(short_text)),
        environment=draw(environments),
        duration_s=draw(non_negative),
    )


def _bumped(previous: tuple[int, int, int], bump: str) -> tuple[int, int, int]:
    major, minor, patch = previous
    if bump == "major":
        return (major + 1, 0, 0)
    if bump == "minor":
        return (major, minor + 1, 0)
    return (major, minor, patch + 1)


@st.composite
def model_registered(draw: st.DrawFn) -> registry.ModelVersionRegistered:
    schema = draw(feature_schemas)
    previous: tuple[int, int, int] | None = draw(_opt(_parts))
    bump: str | None = None
    version = draw(_parts)
    if previous is not None:
        bump = draw(_choice(BumpKind))
        version = _bumped(previous, bump)
    return registry.ModelVersionRegistered(
        model=draw(slugs),
        version="{}.{}.{}".format(*version),
        run_id=draw(tokens),
        previous_version=None if previous is None else "{}.{}.{}".format(*previous),
        bump=bump,
        metrics=draw(metrics),
        params=draw(params),
        baseline=draw(_opt(baselines)),
        artifact=draw(artifacts),
        reference_profile=draw(reference_profiles([f.name for f in schema])),
        feature_schema=schema,
        label=draw(_opt(feature_names)),
        datasets=draw(st.lists(dataset_refs(), min_size=1, max_size=2)),
        code_version=draw(_opt(tokens)),
    )


@st.composite
def prediction_logged(draw: st.DrawFn) -> inference.PredictionLogged:
    error = draw(st.booleans())
    return inference.PredictionLogged(
        model=draw(slugs),
        version=draw(semvers),
        alias=draw(_opt(slugs)),
        request_id=draw(tokens),
        features=draw(st.dictionaries(feature_names, st.none() | scalars, max_size=6)),
        prediction=draw(_opt(scalars) if error else scalars),
        probability=draw(_opt(ratios)),
        latency_ms=draw(non_negative),
        ts=draw(timestamps),
        error=error,
    )


feature_drifts = st.builds(
    FeatureDrift,
    name=feature_names,
    method=_choice(DriftMethod),
    score=non_negative,
    threshold=non_negative,
    drifted=st.booleans(),
    statistic=_opt(non_negative),
)

_gate_common: dict[str, st.SearchStrategy[Any]] = {"model": slugs, "version": semvers}

STRATEGIES: dict[type[EventData], st.SearchStrategy[Any]] = {
    data_events.DataArrived: st.builds(
        data_events.DataArrived,
        dataset=slugs,
        batch_id=tokens,
        uri=uris,
        rows=counts,
        sha256=sha256s,
        completeness=ratios,
        format=_opt(tokens),
    ),
    training.TrainingRequested: training_requested(),
    training.RunStarted: st.builds(
        training.RunStarted, run_id=tokens, model=slugs, reason=_choice(TrainingReason)
    ),
    training.RunFinished: run_finished(),
    training.RunFailed: st.builds(
        training.RunFailed,
        run_id=tokens,
        model=slugs,
        reason=_choice(TrainingReason),
        stage=slugs,
        error=text,
        error_type=_opt(tokens),
    ),
    registry.ModelVersionRegistered: model_registered(),
    gate.CheckPassed: st.builds(
        gate.CheckPassed,
        stage=slugs,
        kind=_choice(CheckKind),
        evidence=evidence_lists,
        **_gate_common,
    ),
    gate.GateFailed: st.builds(
        gate.GateFailed,
        stage=slugs,
        kind=_choice(CheckKind),
        reason=text,
        evidence=evidence_lists,
        **_gate_common,
    ),
    gate.GatePassed: st.builds(
        gate.GatePassed,
        stages=st.lists(slugs, min_size=1, max_size=6, unique=True),
        **_gate_common,
    ),
    gate.ApprovalRequested: st.builds(
        gate.ApprovalRequested, stage=slugs, expires_at=_opt(timestamps), **_gate_common
    ),
    gate.ApprovalGranted: st.builds(
        gate.ApprovalGranted,
        stage=slugs,
        approver=short_text,
        comment=_opt(text),
        **_gate_common,
    ),
    gate.ApprovalRejected: st.builds(
        gate.ApprovalRejected,
        stage=slugs,
        approver=short_text,
        comment=_opt(text),
        **_gate_common,
    ),
    gate.ExternalCheckReported: st.builds(
        gate.ExternalCheckReported,
        check=slugs,
        status=_choice(CheckStatus),
        reporter=short_text,
        url=_opt(uris),
        details=_opt(text),
        **_gate_common,
    ),
    registry.ModelPromoted: st.builds(
        registry.ModelPromoted,
        alias=slugs,
        traffic_percent=st.floats(0, 100),
        previous_version=_opt(semvers),
        cause=_choice(PromotionCause),
        actor=_opt(short_text),
        **_gate_common,
    ),
    registry.ModelRolledBack: st.builds(
        registry.ModelRolledBack,
        model=slugs,
        alias=slugs,
        from_version=st.just("2.0.0"),
        to_version=_opt(semvers.filter(lambda v: v != "2.0.0")),
        cause=_choice(RollbackCause),
        reason=_opt(text),
        actor=_opt(short_text),
    ),
    inference.PredictionLogged: prediction_logged(),
    inference.FeedbackReceived: st.builds(
        inference.FeedbackReceived,
        model=slugs,
        version=_opt(semvers),
        request_id=tokens,
        label=scalars,
        ts=timestamps,
    ),
    monitoring.DriftDetected: st.builds(
        monitoring.DriftDetected,
        alias=_opt(slugs),
        features=st.lists(
            feature_drifts, min_size=1, max_size=6, unique_by=lambda f: (f.name, f.method)
        ),
        window=windows(),
        share_drifted=ratios,
        share_threshold=_opt(ratios),
        **_gate_common,
    ),
    monitoring.ModelDegraded: st.builds(
        monitoring.ModelDegraded,
        alias=slugs,
        evidence=st.lists(evidence, min_size=1, max_size=4),
        window=windows(),
        baseline_version=_opt(semvers),
        **_gate_common,
    ),
    monitoring.CanaryHealthy: st.builds(
        monitoring.CanaryHealthy,
        alias=slugs,
        window=windows(),
        evidence=evidence_lists,
        baseline_version=_opt(semvers),
        **_gate_common,
    ),
    audit.AuditCheckpointed: st.builds(
        audit.AuditCheckpointed,
        chain=st.from_regex(r"\A[a-z_][a-z0-9_]{0,20}\Z"),
        seq=st.integers(1, 2**53 - 1),
        hash=sha256s,
        key_id=st.from_regex(r"\A[0-9a-f]{16}\Z"),
        signed_at=timestamps,
        signature=st.from_regex(r"\A[0-9a-f]{128}\Z"),
    ),
}


def events(model: type[EventData]) -> st.SearchStrategy[CloudEvent[Any]]:
    """Whole envelopes around ``model``'s data, with optional attributes drawn too."""
    return st.builds(
        new_event,
        STRATEGIES[model],
        source=st.sampled_from(["mlcp/trainer", "mlcp/registry", "pipeline/churn"]),
        subject=_opt(slugs),
        correlationid=_opt(tokens),
        causationid=_opt(tokens),
        id=_opt(tokens),
    )
