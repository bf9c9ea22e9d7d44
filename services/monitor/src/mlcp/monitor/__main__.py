"""`python -m mlcp.monitor`: run the monitor service until SIGTERM."""

from __future__ import annotations

from mlcp.monitor.app import build
from mlcp.runtime.entry import run_service


def main() -> None:
    """Start the service with settings from the environment."""
    run_service(build)


if __name__ == "__main__":
    main()
