"""mlcp notifier service."""
