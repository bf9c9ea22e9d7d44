"""mlcp dev stack: real Apache Kafka (KRaft) and PostgreSQL on loopback, without Docker.

`up()` starts what is missing and returns a StackInfo; `MLCP_KAFKA_BOOTSTRAP` /
`MLCP_DATABASE_URL` name existing servers instead. The start/stop/restart helpers are for
fault-injection tests.
"""

from mlcp.devstack.config import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_DATABASE_URL,
    DevstackError,
    Settings,
    StackInfo,
    load_settings,
)
from mlcp.devstack.kafka import KAFKA_VERSION
from mlcp.devstack.stack import (
    ComponentStatus,
    current,
    down,
    principals,
    reset,
    restart_kafka,
    restart_postgres,
    rotate_password,
    start_kafka,
    start_postgres,
    status,
    stop_kafka,
    stop_postgres,
    up,
)

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_DATABASE_URL",
    "KAFKA_VERSION",
    "ComponentStatus",
    "DevstackError",
    "Settings",
    "StackInfo",
    "current",
    "down",
    "load_settings",
    "principals",
    "reset",
    "restart_kafka",
    "restart_postgres",
    "rotate_password",
    "start_kafka",
    "start_postgres",
    "status",
    "stop_kafka",
    "stop_postgres",
    "up",
]
