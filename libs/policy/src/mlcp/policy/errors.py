"""The error a process raises when it cannot start with the configuration it was given."""


class ConfigurationError(RuntimeError):
    """The process cannot start with the configuration it was given."""
