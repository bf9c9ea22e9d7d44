"""Events of data pipelines."""

from typing import ClassVar

from mlcp.contracts import topics
from mlcp.contracts.base import EventData
from mlcp.contracts.types import Count, DatasetName, Ratio, Sha256Hex, ShortToken, Token, Uri


class DataArrived(EventData):
    """A batch of training data landed.

    Emitted by data pipelines (Python client or CLI) once per batch, after the batch is durably
    stored at ``uri``. The trainer adds it to the dataset's ledger and may request a retrain.
    Key: ``dataset``.
    """

    TYPE: ClassVar[str] = topics.DATA_ARRIVED
    KEY_FIELD: ClassVar[str] = "dataset"

    dataset: DatasetName
    """Dataset the batch belongs to (models name their dataset in the platform config)."""
    batch_id: Token
    """Producer-chosen batch id, unique within the dataset; a re-sent batch keeps its id. The
    trainer counts a batch by its content (dataset, sha256) once, whatever its id. Without an
    id of its own, a producer uses 'sha256-' + the first 16 hex characters of sha256 (the CLI's
    default), the same for the same file."""
    uri: Uri
    """Where the batch is stored (file://…, s3://…)."""
    rows: Count
    """Number of rows in the batch."""
    sha256: Sha256Hex
    """Digest of the stored batch file's bytes."""
    completeness: Ratio
    """Share of non-missing cells in the batch, in [0, 1]."""
    format: ShortToken | None = None
    """File format, e.g. 'csv' or 'parquet'; readers infer it from the URI when null."""

    @staticmethod
    def batch_id_for(sha256: str) -> str:
        """The default batch id of a file: stable for the same content (``sha256-<16 hex>``),
        so that announcing the same file again names the same batch."""
        return f"sha256-{sha256[:16]}"
