"""The recording transaction builds events the way the real one does, without an outbox."""

import pytest

from mlcp.contracts import DataArrived
from tests.fakes.tx import RecordingTx

pytestmark = pytest.mark.unit


async def test_recording_tx_keeps_emitted_events_in_order_with_their_cause() -> None:
    tx = RecordingTx(service="trainer", correlationid="c-1")
    first = await tx.emit(DataArrived.model_validate(_data("a")), subject="s")
    await tx.emit_many([(DataArrived.model_validate(_data("b")), None)])
    assert tx.emitted_types() == [DataArrived.TYPE, DataArrived.TYPE]
    assert first.source == "mlcp/trainer"
    assert first.subject == "s"
    assert tx.emitted[0].correlationid == "c-1"


def _data(dataset: str) -> dict[str, object]:
    return {
        "dataset": dataset,
        "uri": f"file:///tmp/{dataset}.parquet",
        "rows": 10,
        "sha256": "0" * 64,
        "batch_id": f"batch-{dataset}",
        "completeness": 1.0,
    }
