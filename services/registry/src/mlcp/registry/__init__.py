"""mlcp registry service."""
