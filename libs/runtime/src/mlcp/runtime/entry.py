"""The ``main()`` of every service: clear one-line errors instead of stack traces at start."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlcp.runtime.settings import ConfigurationError, Settings, load_settings

if TYPE_CHECKING:
    from mlcp.runtime.service import ServiceRuntime

EXIT_CONFIG = 2


def run_service(build: Callable[[Settings], ServiceRuntime]) -> None:
    """Load settings, build the service and run it; a bad configuration exits 2 with the reason."""
    try:
        runtime = build(load_settings())
        runtime.run()
    except ConfigurationError as exc:
        print(f"mlcp: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
