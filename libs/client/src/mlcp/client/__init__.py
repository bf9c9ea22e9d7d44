"""mlcp.client — what inference services and data pipelines import.

Example (an async service)::

    from mlcp.client import AsyncModelClient

    client = AsyncModelClient("churn")          # MLCP_* variables: registry, bus, artifacts
    await client.start()                         # reads the aliases, follows the bus
    answer = client.predict(features, key=user_id)   # canary share, sticky; logged in batches
    answer.version, answer.alias
    await client.close()                         # flushes the prediction log

``ModelClient`` is the same for synchronous code. docs/serving.md explains the parts.
"""

from mlcp.client.client import AsyncModelClient, ModelClient, Prediction, default_predict
from mlcp.client.follower import AliasFollower, Served, Serving
from mlcp.client.logger import LoggerStats, PredictionLogger
from mlcp.client.models import ArtifactRef, ModelCache
from mlcp.client.pipelines import emit_data_arrived, emit_data_arrived_async
from mlcp.client.router import Split, bucket
from mlcp.client.settings import ClientConfigurationError, ClientSettings

__all__ = [
    "AliasFollower",
    "ArtifactRef",
    "AsyncModelClient",
    "ClientConfigurationError",
    "ClientSettings",
    "LoggerStats",
    "ModelCache",
    "ModelClient",
    "Prediction",
    "PredictionLogger",
    "Served",
    "Serving",
    "Split",
    "bucket",
    "default_predict",
    "emit_data_arrived",
    "emit_data_arrived_async",
]
