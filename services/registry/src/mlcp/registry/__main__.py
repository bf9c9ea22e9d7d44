"""`python -m mlcp.registry`: run the registry service until SIGTERM."""

from __future__ import annotations

from mlcp.registry.app import build


def main() -> None:
    """Start the service with settings from the environment."""
    build().run()


if __name__ == "__main__":
    main()
