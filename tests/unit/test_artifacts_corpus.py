"""The hostile corpus (tests/builders.py) against the scan and the restricted loader.

Each attack class is refused by the scan with a reason naming the cause — with pickle allowed
(only the allow-list stands in the way) and with the default policy — and by the restricted
loader; its marker file proves that no payload ran. ``test_the_corpus_is_real`` runs each
payload through the ordinary loaders in a throwaway process: it does create the marker.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from mlcp.artifacts import (
    ArtifactPolicy,
    ArtifactRefused,
    FileStore,
    RestrictedUnpickler,
    load_artifact,
    scan_artifact,
)
from tests.builders import (
    HOSTILE,
    OPTED_IN,
    Built,
    Hostile,
    op_str,
    reduce_pickle,
    sha256_of,
    stream,
    touch,
)

pytestmark = pytest.mark.unit

BY_NAME = {h.name: h for h in HOSTILE}


@pytest.fixture
def case(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh artifact root and the marker a payload would create."""
    root = tmp_path / "root"
    root.mkdir()
    return root, tmp_path / "payload-ran"


def write(hostile: Hostile, case: tuple[Path, Path]) -> Built:
    root, marker = case
    return hostile.write(root, marker)


@pytest.mark.parametrize("hostile", [h for h in HOSTILE if h.prove], ids=lambda h: h.name)
def test_the_corpus_is_real(hostile: Hostile, case: tuple[Path, Path]) -> None:
    """Loaded the ordinary way, in a separate process, each payload does run."""
    built = write(hostile, case)
    code = hostile.prove.format(path=str(built.path))  # type: ignore[union-attr]
    subprocess.run([sys.executable, "-c", code], timeout=120, capture_output=True)
    assert case[1].exists(), f"{hostile.name}: the payload did not run, the case proves nothing"


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: h.name)
def test_the_scan_refuses_each_class_naming_the_cause(
    hostile: Hostile, case: tuple[Path, Path]
) -> None:
    built = write(hostile, case)
    result = scan_artifact(
        built.uri,
        built.sha256,
        built.format,
        store=FileStore(case[0]),
        policy=OPTED_IN,
        limits=hostile.limits,
    )
    assert not result.passed
    assert set(hostile.causes) <= {f.cause for f in result.findings}, result.reason
    assert hostile.reason in result.reason
    assert not case[1].exists()


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: h.name)
def test_the_scan_refuses_each_class_under_the_default_policy(
    hostile: Hostile, case: tuple[Path, Path]
) -> None:
    built = write(hostile, case)
    result = scan_artifact(
        built.uri, built.sha256, built.format, store=FileStore(case[0]), limits=hostile.limits
    )
    assert not result.passed
    assert not case[1].exists()


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: h.name)
def test_the_restricted_loader_refuses_each_class(
    hostile: Hostile, case: tuple[Path, Path]
) -> None:
    built = write(hostile, case)
    with pytest.raises(ArtifactRefused) as refused:
        load_artifact(
            built.uri,
            built.sha256,
            built.format,
            store=FileStore(case[0]),
            policy=OPTED_IN,
            limits=hostile.limits,
        )
    assert hostile.causes[0] in refused.value.causes
    assert hostile.reason in str(refused.value)
    assert not case[1].exists()


@pytest.mark.parametrize(
    "name",
    ["dotted-name-under-trusted-module", "loader-joblib-on-a-second-file", "nested-pickle"],
)
def test_a_stream_that_slipped_past_the_scan_cannot_import_anything_else(
    name: str, case: tuple[Path, Path]
) -> None:
    """The restricted unpickler on its own (as if the scan had been skipped)."""
    built = write(BY_NAME[name], case)
    with built.path.open("rb") as handle, pytest.raises(pickle.UnpicklingError, match="refused"):
        RestrictedUnpickler(handle, OPTED_IN.pickle_globals()).load()
    assert not case[1].exists()


def test_the_restricted_unpickler_refuses_a_registered_copyreg_extension(
    case: tuple[Path, Path],
) -> None:
    """EXT opcodes resolve through copyreg's registry and then find_class: still refused."""
    import copyreg
    import io

    copyreg.add_extension("posix", "system", 0x0FF0)
    try:
        data = stream(b"\x83\xf0\x0f" + op_str(touch(case[1])) + b"\x85R")
        with pytest.raises(pickle.UnpicklingError, match=r"posix\.system"):
            RestrictedUnpickler(io.BytesIO(data), OPTED_IN.pickle_globals()).load()
    finally:
        copyreg.remove_extension("posix", "system", 0x0FF0)
    assert not case[1].exists()


def test_a_global_trusted_by_the_model_is_exact_not_a_prefix(case: tuple[Path, Path]) -> None:
    root, marker = case
    path = root / "m.pkl"
    path.write_bytes(reduce_pickle(os.system, touch(marker)))
    sha = sha256_of(path)
    # Trusting "posix.getcwd" (or any other name under posix) does not trust posix.system.
    policy = ArtifactPolicy(allow_pickle=True, trusted=frozenset({"posix.getcwd"}))
    result = scan_artifact(path.as_uri(), sha, "pickle", store=FileStore(root), policy=policy)
    assert result.names == ("posix.system",)
    assert not marker.exists()
