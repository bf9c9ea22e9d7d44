"""mlcp gatekeeper service."""
