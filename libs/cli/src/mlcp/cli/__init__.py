"""mlcp operator CLI (``mlcp``)."""
