"""`python -m mlcp.trainer`: run the trainer service until SIGTERM."""

from __future__ import annotations

from mlcp.runtime.entry import run_service
from mlcp.trainer.app import build


def main() -> None:
    """Start the service with settings from the environment."""
    run_service(build)


if __name__ == "__main__":
    main()
