"""JSON Schema snapshots: an unintended contract change fails here.

To accept an intended change, regenerate the snapshots (and the published copies)::

    UPDATE_SNAPSHOTS=1 uv run pytest tests/contracts
    uv run python -m mlcp.contracts.schemas --write docs/schemas

A breaking change (removed/renamed field, narrower type, new required field) needs a new
``.v2`` event type instead of an edited ``.v1``.
"""

import difflib
import json
import os
from pathlib import Path

import pytest

from mlcp.contracts import EVENT_TYPES, json_schemas
from mlcp.contracts.schemas import main, render, stale_schemas

pytestmark = pytest.mark.contracts

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("UPDATE_SNAPSHOTS") == "1"
HOW_TO_UPDATE = (
    "If this contract change is intended, run `UPDATE_SNAPSHOTS=1 uv run pytest tests/contracts` "
    "and commit tests/contracts/snapshots/ (breaking changes need a new .v2 type instead)."
)


def test_a_schema_per_type() -> None:
    schemas = json_schemas()
    assert list(schemas) == list(EVENT_TYPES)
    for event_type, schema in schemas.items():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["properties"]["type"]["const"] == event_type
        assert schema["x-mlcp-topic"] == event_type
        assert schema["required"] == ["specversion", "id", "source", "type", "time", "data"]
        assert schema["description"]


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_schema_matches_snapshot(event_type: str) -> None:
    path = SNAPSHOTS / f"{event_type}.json"
    current = render(json_schemas()[event_type])
    if UPDATE:
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(current, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"no snapshot {path.name} for {event_type}. {HOW_TO_UPDATE}")
    committed = path.read_text(encoding="utf-8")
    if committed != current:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                current.splitlines(keepends=True),
                f"snapshots/{path.name}",
                "generated",
                n=2,
            )
        )
        pytest.fail(f"JSON Schema of {event_type} changed:\n{diff[:4000]}\n{HOW_TO_UPDATE}")


def test_no_orphan_snapshots() -> None:
    if UPDATE:
        for path in SNAPSHOTS.glob("*.json"):
            if path.stem not in EVENT_TYPES:
                path.unlink()
        return
    orphans = sorted(p.name for p in SNAPSHOTS.glob("*.json") if p.stem not in EVENT_TYPES)
    assert not orphans, f"snapshots for types no longer in the catalog: {orphans}. {HOW_TO_UPDATE}"


def test_schema_cli_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--write", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.glob("*.json"))
    assert written == sorted(f"{t}.json" for t in EVENT_TYPES)
    assert json.loads((tmp_path / "mlcp.run.finished.v1.json").read_text())["title"]
    assert main(["--check", str(tmp_path)]) == 0
    (tmp_path / "mlcp.run.started.v1.json").write_text("{}\n")
    assert main(["--check", str(tmp_path)]) == 1
    assert stale_schemas(tmp_path) == ["mlcp.run.started.v1.json"]
    assert "out of date" in capsys.readouterr().err
