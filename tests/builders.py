"""Shared test builders: the platform config, a training job spec, the hostile artifact corpus,
and helpers for tests that run services as processes.

The platform config: ``model_entry(**overrides)`` is one model as the platform YAML spells it,
``platform_yaml`` / ``platform_config`` / ``write_platform_config`` the whole file. Tests and
benchmarks build their config here instead of carrying their own copy of the YAML.

The hostile artifact corpus: one hand-made model file per attack class of issue #14, each built
here by the tests themselves. Every payload, if it ever ran, would create its ``marker`` file, so
a test proves that nothing ran by the marker's absence (and ``test_the_corpus_is_real`` proves,
in a throwaway process with the ordinary loaders, that the payloads do run).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import yaml

from mlcp.artifacts import ArtifactLimits, ArtifactPolicy
from mlcp.artifacts.limits import GiB, MiB
from mlcp.contracts import ModelPromoted
from mlcp.examples.sklearn import BatchFile
from mlcp.policy.platform import PlatformConfig
from mlcp.trainer.training import BatchSpec, JobSpec
from tests.conftest import Proc, wait_for

EXAMPLE_TRAIN = "mlcp.examples.sklearn:train_logistic"


def model_entry(
    dataset: str = "churn-data", label: str = "churned", **overrides: Any
) -> dict[str, Any]:
    """One model of the platform YAML: the example entrypoint, default policies, plus
    ``overrides`` (any key of a model: ``gates=[…]``, ``retrain={"min_new_rows": 10}`` …)."""
    return {"dataset": dataset, "label": label, "train": EXAMPLE_TRAIN, **overrides}


def platform_dict(
    models: dict[str, dict[str, Any]] | None = None,
    notifications: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The platform YAML as data; one model ``churn`` (``model_entry()``) unless told."""
    config: dict[str, Any] = {"models": {"churn": model_entry()} if models is None else models}
    if notifications is not None:
        config["notifications"] = notifications
    return config


def platform_yaml(
    models: dict[str, dict[str, Any]] | None = None,
    notifications: dict[str, Any] | None = None,
) -> str:
    """The platform YAML text (what ``MLCP_CONFIG`` points at)."""
    return yaml.safe_dump(platform_dict(models, notifications), sort_keys=False)


def platform_config(
    models: dict[str, dict[str, Any]] | None = None,
    notifications: dict[str, Any] | None = None,
) -> PlatformConfig:
    """The validated ``PlatformConfig`` of that YAML."""
    return PlatformConfig.model_validate(platform_dict(models, notifications))


def write_platform_config(
    path: Path,
    models: dict[str, dict[str, Any]] | None = None,
    notifications: dict[str, Any] | None = None,
) -> Path:
    """Write the platform YAML to ``path`` (validated first, so a test never starts a service
    on a config it did not mean); returns ``path``."""
    platform_config(models, notifications)
    path.write_text(platform_yaml(models, notifications))
    return path


def job_spec(
    files: list[BatchFile], root: Path, entrypoint: str = "mlcp.examples.sklearn:train_logistic"
) -> JobSpec:
    """A training job of the example model on ``files``, storing under ``root/artifacts``."""
    return JobSpec(
        run_id="run-1",
        model="churn",
        entrypoint=entrypoint,
        params={"C": 1.0, "max_iter": 200, "seed": 7},
        label="churned",
        features=None,
        batches=tuple(
            BatchSpec("churn-events", f.batch_id, f.uri, f.sha256, f.rows, f.completeness, f.format)
            for f in files
        ),
        artifact_root=str(root / "artifacts"),
    )


# --- pickle bytes by hand ----------------------------------------------------------------------


def op_str(text: str) -> bytes:
    """SHORT_BINUNICODE (or BINUNICODE) pushing ``text``, then MEMOIZE."""
    data = text.encode()
    if len(data) < 256:
        head = b"\x8c" + bytes([len(data)])
    else:
        head = b"X" + len(data).to_bytes(4, "little")
    return head + data + b"\x94"


def op_value(value: Any) -> bytes:
    """The opcodes pushing a str, None, bool, bytes or list of those."""
    if isinstance(value, str):
        return op_str(value)
    if value is None:
        return b"N"
    if value is True:
        return b"\x88"
    if value is False:
        return b"\x89"
    if isinstance(value, bytes):
        return b"C" + bytes([len(value)]) + value if len(value) < 256 else _binbytes(value)
    if isinstance(value, list):
        return b"](" + b"".join(op_value(v) for v in value) + b"e"
    raise TypeError(value)


def _binbytes(value: bytes) -> bytes:
    return b"B" + len(value).to_bytes(4, "little") + value


def call(module: str, qualname: str, *args: Any) -> bytes:
    """Opcodes that push ``module``/``qualname`` (STACK_GLOBAL) called with ``args``."""
    return op_str(module) + op_str(qualname) + b"\x93\x94(" + b"".join(map(op_value, args)) + b"tR"


def stream(body: bytes, protocol: int = 4) -> bytes:
    """A whole pickle stream around ``body`` (which leaves one object on the stack)."""
    return b"\x80" + bytes([protocol]) + body + b"."


class _Reduce:
    """An object whose pickle calls ``fn(*args)`` (the classic ``__reduce__`` attack)."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


def reduce_pickle(fn: Callable[..., Any], *args: Any, protocol: int = 4) -> bytes:
    """A model-shaped pickle (a dict) whose loading calls ``fn(*args)``."""
    return pickle.dumps({"model": _Reduce(fn, *args), "version": 1}, protocol=protocol)


def touch(marker: Path) -> str:
    return f"touch {marker}"


def gzip_members(*chunks: bytes) -> bytes:
    """One gzip stream of several members (what ``gzip`` reads as their concatenation)."""
    return b"".join(gzip.compress(c, compresslevel=1) for c in chunks)


def gzip_zeros(total: int) -> bytes:
    """gzip members inflating to ``total`` zero bytes, cheaply (one 16 MiB member, repeated)."""
    member = gzip.compress(bytes(16 * MiB), compresslevel=1)
    return member * (total // (16 * MiB))


def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- the corpus --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    """A hostile artifact written under the root: what a RunFinished would register."""

    uri: str
    sha256: str
    format: str
    path: Path

    def ref(self) -> dict[str, str]:
        return {"uri": self.uri, "sha256": self.sha256, "format": self.format}


@dataclass(frozen=True)
class Hostile:
    """One attack class: how to build it, what the scan must say."""

    name: str
    format: str
    causes: tuple[str, ...]
    """Finding causes the scan must report (with the model opted in to pickle: the worst case)."""
    reason: str
    """A piece of the reason that names the cause."""
    build: Callable[[Path, Path], bytes | Path]
    """(root, marker) → the artifact's bytes, or the path it wrote itself."""
    prove: str | None = None
    """Python code run in a throwaway process with the ordinary loaders: it must create the
    marker (``{path}`` is the artifact), proving the payload is real."""
    limits: ArtifactLimits = field(default_factory=ArtifactLimits)
    registered_sha256: str | None = None
    """Register this digest instead of the file's (the wrong-digest case)."""
    uri: Callable[[Path, Path], str] | None = None
    """The URI to register, when it is not the written file's."""

    def write(self, root: Path, marker: Path) -> Built:
        """Write the artifact under ``root`` (a fresh directory per case)."""
        made = self.build(root, marker)
        if isinstance(made, bytes):
            path = root / f"{self.name}.{self.format}"
            path.write_bytes(made)
        else:
            path = made
        uri = self.uri(root, path) if self.uri else path.as_uri()
        digest = self.registered_sha256 or (sha256_of(path) if path.exists() else "0" * 64)
        return Built(uri, digest, self.format, path)


PICKLE_LOAD = "import pickle; pickle.load(open({path!r}, 'rb'))"


def _dotted(root: Path, marker: Path) -> bytes:
    # numpy is a trusted top-level module, and numpy.f2py.os.system is os.system.
    return stream(b"}" + op_str("model") + call("numpy", "f2py.os.system", touch(marker)) + b"s")


def _second_file(loader: Callable[..., Any], *extra: Any) -> Callable[[Path, Path], bytes]:
    def build(root: Path, marker: Path) -> bytes:
        second = root / "second.bin"  # never registered, never scanned by anyone
        second.write_bytes(reduce_pickle(os.system, touch(marker)))
        return reduce_pickle(loader, str(second), *extra)

    return build


def _bomb_payload_past_the_cap(root: Path, marker: Path) -> bytes:
    # A joblib-style gzip pickle: 64 MiB of zeros in one bytes argument, then the payload. The
    # old scan inflated up to its cap, stopped, and reported nothing past it.
    filler = 64 * MiB
    head = b"\x80\x04\x8e" + filler.to_bytes(8, "little")
    tail = b"0" + call("posix", "system", touch(marker)) + b"."
    return gzip_members(head) + gzip_zeros(filler) + gzip_members(tail)


def _gzip_bomb(root: Path, marker: Path) -> bytes:
    head = b"\x80\x04\x8e" + GiB.to_bytes(8, "little")
    tail = b"0" + call("posix", "system", touch(marker)) + b"."
    return gzip_members(head) + gzip_zeros(GiB) + gzip_members(tail)


def _zip_bomb(root: Path, marker: Path) -> bytes:
    return zip_of({"archive/data.pkl": bytes(64 * MiB)})


def _zip_labelled_onnx(root: Path, marker: Path) -> bytes:
    # PyTorch's layout: a zip whose archive/data.pkl is a pickle (torch.load unpickles it).
    return zip_of(
        {
            "archive/version": b"3\n",
            "archive/data.pkl": reduce_pickle(os.system, touch(marker), protocol=2),
        }
    )


def _one_gib(root: Path, marker: Path) -> Path:
    # 1 GiB, sparse on disk: a pickle whose first argument is 1 GiB of zeros, payload behind it.
    path = root / "one-gib.pkl"
    size = GiB
    with path.open("wb") as out:
        out.write(b"\x80\x04\x8e" + size.to_bytes(8, "little"))
        out.seek(11 + size)
        out.write(b"0" + call("posix", "system", touch(marker)) + b".")
    return path


def _copyreg_reconstructor(root: Path, marker: Path) -> bytes:
    # copyreg._reconstructor(Popen, Popen, argv) runs Popen.__init__(obj, argv): a command.
    return stream(
        op_str("copyreg")
        + op_str("_reconstructor")
        + b"\x93\x94("
        + op_str("subprocess")
        + op_str("Popen")
        + b"\x93\x94"
        + b"h\x05"  # BINGET 5: the same Popen class again, from the memo
        + op_value(["touch", str(marker)])
        + b"tR",
        protocol=2,
    )


def _copyreg_extension(root: Path, marker: Path) -> bytes:
    # EXT2 names a global through copyreg's extension registry, not in the stream.
    return stream(b"\x83\xf0\x0f" + op_str(touch(marker)) + b"\x85R", protocol=2)


def _nested_pickle(root: Path, marker: Path) -> bytes:
    inner = reduce_pickle(os.system, touch(marker))
    return reduce_pickle(pickle.loads, inner)


def _nested_containers(root: Path, marker: Path) -> bytes:
    inner = zip_of({"data.pkl": reduce_pickle(os.system, touch(marker))})
    return gzip.compress(zip_of({"model/inner.zip": inner}))


def _too_deep(root: Path, marker: Path) -> bytes:
    data = reduce_pickle(os.system, touch(marker))
    for level in range(5):
        data = zip_of({f"level{level}.zip": data})
    return data


class _Sneaky:
    """Looks like an estimator; its ``__reduce_ex__`` (what pickle really calls) is a payload."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return (subprocess.call, (self.command.split(),), None, None, None)


def _reduce_ex(root: Path, marker: Path) -> bytes:
    return pickle.dumps({"model": _Sneaky(touch(marker))}, protocol=5)


def _skops_function(root: Path, marker: Path) -> bytes:
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    return bytes(sio.dumps(FunctionTransformer(func=os.system, kw_args={})))


def _npy_object_array(root: Path, marker: Path) -> bytes:
    # A skops-shaped archive whose array member is an object .npy: numpy unpickles its items.
    buffer = io.BytesIO()
    array = np.empty(1, dtype=object)
    array[0] = _Reduce(os.system, touch(marker))
    np.save(buffer, array, allow_pickle=True)
    schema = (
        '{"__class__": "ndarray", "__module__": "numpy", "__loader__": "NdArrayNode",'
        ' "type": "numpy", "file": "a.npy", "protocol": 2, "_skops_version": "0.16.0"}'
    )
    return zip_of({"schema.json": schema.encode(), "a.npy": buffer.getvalue()})


def _hidden_zip(root: Path, marker: Path) -> bytes:
    archive = zip_of({"archive/data.pkl": reduce_pickle(os.system, touch(marker))})
    return b"\x08\x01\x12\x04onnx" + bytes(64) + archive


def _symlink(root: Path, marker: Path) -> Path:
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir(exist_ok=True)
    target = outside / "evil.pkl"
    target.write_bytes(reduce_pickle(os.system, touch(marker)))
    link = root / "link.pkl"
    link.symlink_to(target)
    return link


def _outside(root: Path, marker: Path) -> Path:
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir(exist_ok=True)
    target = outside / "evil.pkl"
    target.write_bytes(reduce_pickle(os.system, touch(marker)))
    return target


def _traversal_uri(root: Path, path: Path) -> str:
    return f"../{path.parent.name}/{path.name}"


def _wrong_digest(root: Path, marker: Path) -> bytes:
    return reduce_pickle(os.system, touch(marker))


def _proto_mid_stream(root: Path, marker: Path) -> bytes:
    # Labelled as data; the unpickler accepts PROTO anywhere, a scan stricter than it must not
    # take the stream for "not a pickle" at that point.
    return b"N0\x80\x02" + _protocol0_call(marker)


def _long_line(root: Path, marker: Path) -> bytes:
    # A 5,000-byte protocol-0 string first: a scan that gives up on long lines calls this data.
    return b"S'" + b"x" * 5000 + b"'\n0" + _protocol0_call(marker)


def _protocol0_call(marker: Path) -> bytes:
    return b"cposix\nsystem\n(S'" + touch(marker).encode() + b"'\ntR."


def _many_opcodes(root: Path, marker: Path) -> bytes:
    # Half a million tiny opcodes: a scan that kept each one would grow without bound.
    return stream(b"(" + b"N" * 500_000 + b"t0" + call("posix", "system", touch(marker)))


HOSTILE: tuple[Hostile, ...] = (
    Hostile(
        "reduce-os-system",
        "pickle",
        ("global_refused",),
        "global posix.system is refused: it can run code",
        lambda root, marker: reduce_pickle(os.system, touch(marker)),
        prove=PICKLE_LOAD,
    ),
    Hostile(
        "reduce-subprocess",
        "pickle",
        ("global_refused",),
        "global subprocess.check_call is refused: it can run code",
        lambda root, marker: reduce_pickle(subprocess.check_call, ["touch", str(marker)]),
        prove=PICKLE_LOAD,
    ),
    Hostile(
        "reduce-eval",
        "pickle",
        ("global_refused",),
        "global builtins.eval is refused: it can run code",
        lambda root, marker: reduce_pickle(eval, f"__import__('os').system({touch(marker)!r})"),
        prove=PICKLE_LOAD,
    ),
    Hostile(
        "reduce-exec",
        "pickle",
        ("global_refused",),
        "global builtins.exec is refused: it can run code",
        lambda root, marker: reduce_pickle(exec, f"import os; os.system({touch(marker)!r})"),
        prove=PICKLE_LOAD,
    ),
    Hostile(
        "reduce-ex-trick",
        "pickle",
        ("global_refused",),
        "global subprocess.call is refused: it can run code",
        _reduce_ex,
        prove=PICKLE_LOAD,
    ),
    Hostile(
        "dotted-name-under-trusted-module",
        "pickle",
        ("global_refused",),
        "global numpy:f2py.os.system is refused: a dotted attribute path under module numpy",
        _dotted,
        prove=PICKLE_LOAD,
    ),
    Hostile(
        "loader-joblib-on-a-second-file",
        "pickle",
        ("global_refused",),
        "global joblib.numpy_pickle.load is refused: it loads another file",
        _second_file(__import__("joblib").load),
        prove=PICKLE_LOAD,
    ),
    Hostile(
        "loader-pandas-read-pickle",
        "pickle",
        ("global_refused",),
        "global pandas.read_pickle is refused: it loads another file",
        _second_file(__import__("pandas").read_pickle),
        prove=PICKLE_LOAD,
    ),
    Hostile(
        "loader-numpy-load-allow-pickle",
        "pickle",
        ("global_refused",),
        "global numpy.load is refused: it loads another file",
        _second_file(np.load, None, True),
        prove=PICKLE_LOAD,
    ),
    Hostile(
        "copyreg-reconstructor",
        "pickle",
        ("global_refused",),
        "global copyreg._reconstructor is refused: it can run code",
        _copyreg_reconstructor,
        prove=PICKLE_LOAD,
    ),
    Hostile(
        "copyreg-extension-registry",
        "pickle",
        ("opcode_refused",),
        "opcode EXT2 is refused: the copyreg extension registry",
        _copyreg_extension,
        prove=(
            "import copyreg, pickle; copyreg.add_extension('posix', 'system', 0x0ff0);"
            " pickle.load(open({path!r}, 'rb'))"
        ),
    ),
    Hostile(
        "nested-pickle",
        "pickle",
        ("global_refused",),
        "global _pickle.loads is refused: it loads another file or pickle",
        _nested_pickle,
        prove=PICKLE_LOAD,
    ),
    Hostile(
        "nested-containers",
        "joblib",
        ("global_refused",),
        "global posix.system is refused",
        _nested_containers,
    ),
    Hostile(
        "containers-too-deep",
        "onnx",
        ("nesting",),
        "containers nested deeper than 3",
        _too_deep,
    ),
    Hostile(
        "zip-labelled-onnx-with-inner-pickle",
        "onnx",
        ("global_refused",),
        "global posix.system is refused: it can run code (in zip-labelled-onnx-with-inner-pickle"
        ".onnx!/archive/data.pkl)",
        _zip_labelled_onnx,
        prove=(
            "import pickle, zipfile;"
            " pickle.loads(zipfile.ZipFile({path!r}).read('archive/data.pkl'))"
        ),
    ),
    Hostile(
        "pickle-behind-a-mid-stream-proto",
        "onnx",
        ("global_refused",),
        "global posix.system is refused: it can run code",
        _proto_mid_stream,
        prove=PICKLE_LOAD,
    ),
    Hostile(
        "pickle-behind-a-long-line",
        "onnx",
        ("global_refused",),
        "global posix.system is refused: it can run code",
        _long_line,
        prove=PICKLE_LOAD,
    ),
    Hostile(
        "zip-hidden-behind-onnx-bytes",
        "onnx",
        ("hidden_archive",),
        "a zip archive is appended behind other data",
        _hidden_zip,
    ),
    Hostile(
        "decompression-bomb-gzip",
        "joblib",
        ("ratio",),
        "a decompression bomb",
        _gzip_bomb,
    ),
    Hostile(
        "decompression-bomb-payload-past-the-cap",
        "joblib",
        ("decompressed_budget",),
        "inflates past the limit of 16 MiB",
        _bomb_payload_past_the_cap,
        prove="import gzip, pickle; pickle.load(gzip.open({path!r}))",
        # The ratio would stop it first; here only the cap can, as with a bomb of random data.
        limits=ArtifactLimits(max_decompressed_bytes=16 * MiB, max_ratio=1e9),
    ),
    Hostile(
        "decompression-bomb-zip",
        "skops",
        ("ratio",),
        "a decompression bomb",
        _zip_bomb,
    ),
    Hostile(
        "one-gib-file",
        "pickle",
        ("too_large",),
        "over the limit of 512 MiB (MLCP_ARTIFACT_MAX_BYTES)",
        _one_gib,
        # Refused unread: no need to spend seconds hashing it (the memory test does, for real).
        registered_sha256="0" * 64,
    ),
    Hostile(
        "many-opcodes",
        "pickle",
        ("malformed",),
        "more than 200000 opcodes",
        _many_opcodes,
    ),
    Hostile(
        "skops-function-node",
        "skops",
        ("type_refused",),
        "type posix.system is not on the allow-list",
        _skops_function,
    ),
    Hostile(
        "skops-object-array",
        "skops",
        ("object_array",),
        "a numpy array of Python objects: loading it needs pickle",
        _npy_object_array,
        prove=(
            "import io, zipfile, numpy as np;"
            " np.load(io.BytesIO(zipfile.ZipFile({path!r}).read('a.npy')), allow_pickle=True)"
        ),
    ),
    Hostile(
        "symlink",
        "pickle",
        ("symlink",),
        "passes through a symbolic link",
        _symlink,
    ),
    Hostile(
        "traversal",
        "pickle",
        ("outside_root",),
        "is outside the artifact root",
        _outside,
        uri=_traversal_uri,
    ),
    Hostile(
        "wrong-digest",
        "pickle",
        ("digest_mismatch",),
        "differs from the registered " + "a" * 64,
        _wrong_digest,
        registered_sha256="a" * 64,
    ),
)
"""Every attack class the scan and the loader must refuse (issue #14)."""

OPTED_IN = ArtifactPolicy(allow_pickle=True)
"""The worst case: the model allows pickle, so only the allow-list stands in the way."""


# --- services as processes --------------------------------------------------------------------


async def drop_schema(database_url: str, schema: str) -> None:
    """Remove a test's PostgreSQL schema and everything in it."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


async def wait_ready(proc: Proc, url: str, *, timeout: float = 90) -> None:
    """Wait until the service process at ``url`` answers /readyz 200; fail with its log if it
    exits first."""

    async def ready() -> bool:
        assert proc.popen.poll() is None, f"the process exited:\n{proc.output()}"
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{url}/readyz", timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(ready, timeout=timeout, what=f"{url}/readyz")


def model_promoted(
    model: str, version: str, alias: str, previous: str | None = None
) -> ModelPromoted:
    """The registry's ModelPromoted as a gate pass (canary, 10 %) or a healthy canary
    (production, 100 %) announces it."""
    return ModelPromoted(
        model=model,
        version=version,
        alias=alias,
        traffic_percent=10 if alias == "canary" else 100,
        previous_version=previous,
        cause="gate_passed" if alias == "canary" else "canary_healthy",
    )
