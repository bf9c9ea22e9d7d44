"""The serving aliases the platform itself moves (an alias names the version a caller gets).

The registry promotes to and rolls back these two; the monitor watches them; the CLI shows them.
Other aliases are custom slugs (``AliasName``) the platform only stores.
"""

from __future__ import annotations

from typing import Final

CANARY: Final = "canary"
"""The version on trial, served a share of the traffic (``canary.traffic_percent``)."""

PRODUCTION: Final = "production"
"""The version everyone else gets."""

SERVING_ALIASES: Final = (CANARY, PRODUCTION)
"""The aliases the platform moves, in rollout order."""
