"""mlcp monitor service."""
