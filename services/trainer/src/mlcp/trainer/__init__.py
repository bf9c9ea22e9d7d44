"""mlcp trainer service."""
