"""Permanent errors: events a handler will never apply, whatever the number of tries.

A handler (or a pure decision it calls) raises :class:`Refused`; the consumer dead-letters the
event at once with the refusal's reason as ``mlcp-dlq-reason`` — no retries, which would only
repeat the same answer five times and delay the partition. This module imports no I/O library,
so a service's ``domain`` may raise these too.
"""

from __future__ import annotations

from collections.abc import Iterable

from mlcp.policy.platform import ModelConfig, PlatformConfig

UNKNOWN_MODEL = "unknown_model"
"""Dead-letter reason: the event names a model the platform config does not have."""


class Refused(Exception):
    """Raised by a handler for events it will never apply: they go to the DLQ at once (no
    retries) with ``reason`` and their message; the transaction is rolled back and, in a
    batch, the other events are applied without them."""

    def __init__(self, errors: dict[str, str], *, reason: str) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors
        """Refused event id → why."""
        self.reason = reason
        """The dead letter's reason code (``mlcp-dlq-reason``)."""


class UnknownModel(Refused):
    """An event about a model missing from the platform config (``MLCP_CONFIG``).

    The one behaviour for every service: the event is dead-lettered at once with reason
    ``unknown_model`` (docs/architecture.md). Once the model is configured, ``mlcp dlq replay``
    applies it.
    """

    def __init__(self, event_id: str, model: str, known: Iterable[str]) -> None:
        self.model = model
        names = ", ".join(sorted(known)) or "none"
        super().__init__(
            {event_id: f"model {model!r} is not configured in MLCP_CONFIG (configured: {names})"},
            reason=UNKNOWN_MODEL,
        )


def configured_model(config: PlatformConfig, model: str, event_id: str) -> ModelConfig:
    """The model's configuration, or :class:`UnknownModel` for the event that named it."""
    found = config.models.get(model)
    if found is None:
        raise UnknownModel(event_id, model, config.models)
    return found
