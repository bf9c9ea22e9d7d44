"""The reference server's HTTP surface, on a client whose serving state is set by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from mlcp.client import AsyncModelClient, ClientSettings, Served, Serving
from mlcp.client.models import ArtifactRef
from mlcp.client.serve import create_app

pytestmark = pytest.mark.unit


class Doubler:
    def predict(self, rows: Any) -> list[float]:
        return [2 * float(rows["x"].iloc[0])]


def served(alias: str, version: str, percent: float) -> Served:
    return Served(alias, version, percent, ArtifactRef("file:///m", "0" * 64, "skops"), Doubler())


def app_for(tmp_path: Path, serving: Serving | None) -> tuple[TestClient, AsyncModelClient]:
    settings = ClientSettings(artifact_root=str(tmp_path), kafka_security_protocol="PLAINTEXT")
    client = AsyncModelClient("churn", settings=settings, log_predictions=False)
    if serving is not None:
        client.follower.serving = serving
    return TestClient(create_app(client, manage=False)), client


def test_predict_answers_with_the_version_that_made_it(tmp_path: Path) -> None:
    http, _ = app_for(tmp_path, Serving(served("production", "1.0.0", 100), None))
    answer = http.post("/predict", json={"features": {"x": 2.5}, "key": "u1"})
    assert answer.status_code == 200
    assert answer.json()["prediction"] == 5.0
    assert (answer.json()["version"], answer.json()["alias"]) == ("1.0.0", "production")
    assert http.get("/readyz").json() == {"ready": True, "production": "1.0.0", "canary": None}
    assert 'mlcp_serve_requests_total{alias="production",outcome="ok",version="1.0.0"} 1.0' in (
        http.get("/metrics").text
    )


def test_not_ready_and_bad_input_get_clear_answers(tmp_path: Path) -> None:
    http, client = app_for(tmp_path, None)
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").status_code == 503
    assert http.post("/predict", json={"features": {"x": 1}}).status_code == 503
    client.follower.serving = Serving(served("production", "1.0.0", 100), None)
    assert http.post("/predict", content=b"not json").status_code == 400
    assert http.post("/predict", json={"features": {"y": 1}}).status_code == 422
