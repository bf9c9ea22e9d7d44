"""The one URI → local path rule and the one file sha256 (mlcp.artifacts.files)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mlcp.artifacts.files import file_sha256, local_path

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("file:///data/batch%201.csv", Path("/data/batch 1.csv")),
        ("file://localhost/data/b.csv", Path("/data/b.csv")),
        ("/data/b.csv", Path("/data/b.csv")),
        ("relative/b.csv", Path("relative/b.csv")),
        ("~/b.csv", Path.home() / "b.csv"),
        ("C:/data/b.csv", Path("C:/data/b.csv")),
        ("s3://bucket/b.csv", None),
        ("https://example.org/b.csv", None),
        ("file://otherhost/data/b.csv", None),
    ],
)
def test_local_path(uri: str, expected: Path | None) -> None:
    assert local_path(uri) == expected


def test_file_sha256_hashes_every_chunk(tmp_path: Path) -> None:
    data = b"x" * (3 << 20) + b"tail"  # more than one 1 MiB chunk
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
