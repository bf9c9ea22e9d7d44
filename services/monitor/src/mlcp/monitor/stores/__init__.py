"""The monitor's stores in PostgreSQL (asyncpg), one module per aggregate, always on the
handler's connection inside its transaction.

State lives in PostgreSQL, not in memory: the open drift window's rows (as encoded chunks), the
running counts, the watches and every decision. A restart therefore resumes mid-window exactly,
and a decision keyed by (model, version, window id, kind) is recorded — and emitted — once.
"""

from __future__ import annotations

from mlcp.monitor.ports import Stores
from mlcp.monitor.stores.decisions import PgDecisions
from mlcp.monitor.stores.observations import PgObservations
from mlcp.monitor.stores.traffic import PgTraffic
from mlcp.monitor.stores.versions import PgAliases, PgVersions
from mlcp.monitor.stores.watches import PgWatches
from mlcp.runtime.db import Conn


def postgres(conn: Conn) -> Stores:
    """The stores of the transaction on ``conn``."""
    return Stores(
        versions=PgVersions(conn),
        aliases=PgAliases(conn),
        traffic=PgTraffic(conn),
        watches=PgWatches(conn),
        observations=PgObservations(conn),
        decisions=PgDecisions(conn),
    )
