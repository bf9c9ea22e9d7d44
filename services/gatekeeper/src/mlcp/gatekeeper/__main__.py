"""`python -m mlcp.gatekeeper`: run the gatekeeper service until SIGTERM."""

from __future__ import annotations

from mlcp.gatekeeper.app import build
from mlcp.runtime.entry import run_service


def main() -> None:
    """Start the service with settings from the environment."""
    run_service(build)


if __name__ == "__main__":
    main()
