"""`python -m mlcp.gatekeeper` with an invalid approval DAG exits 2 naming the stage and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Infra

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("gates", "expected"),
    [
        (
            "{name: a, kind: manual, depends_on: [b]}, {name: b, kind: external, depends_on: [a]}",
            "gates: cycle a -> b -> a",
        ),
        (
            '{name: q, kind: metrics, require: {accuracy: "about 0.9"}}',
            "models.churn.gates[0].require.accuracy",
        ),
    ],
)
async def test_invalid_dag_stops_the_process_with_the_field(
    infra: Infra, spawn: Any, tmp_path: Path, gates: str, expected: str
) -> None:
    config = tmp_path / "mlcp.yaml"
    config.write_text(
        f'models:\n  churn: {{dataset: d, label: y, train: "m:f", gates: [{gates}]}}\n'
    )
    env = {
        **infra.kafka_env("svc-gatekeeper"),
        "MLCP_DATABASE_URL": infra.database_url,
        "MLCP_CONFIG": str(config),
    }
    proc = spawn(["-m", "mlcp.gatekeeper"], env, "gatekeeper")
    assert await proc.wait_exit(timeout=60) == 2, proc.output()
    assert expected in proc.output()
