"""Why a raw record is not a valid mlcp event. Each error has a short ``reason`` code, used as
the dead-letter reason."""


class ContractError(ValueError):
    """A record that breaks the event contract."""

    reason: str = "contract_error"

    def __init__(
        self, message: str, *, event_type: str | None = None, event_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.event_type = event_type
        """The record's CloudEvents type, when it could be read."""
        self.event_id = event_id
        """The record's CloudEvents id, when it could be read."""


class InvalidJson(ContractError):
    """Not UTF-8, not JSON, or not a JSON object."""

    reason = "invalid_json"


class InvalidEnvelope(ContractError):
    """Missing or invalid CloudEvents attributes (e.g. wrong specversion)."""

    reason = "invalid_envelope"


class UnknownEventType(ContractError):
    """The type is not in the catalog (e.g. a future ``.v2``)."""

    reason = "unknown_type"


class TypeMismatch(ContractError):
    """The type differs from the expected one (the topic's)."""

    reason = "type_mismatch"


class InvalidData(ContractError):
    """``data`` fails its model's validation."""

    reason = "invalid_data"


class PayloadTooLarge(ContractError):
    """The encoded event is larger than MAX_EVENT_BYTES (or the consumer's lower limit)."""

    reason = "too_large"


class NestingTooDeep(ContractError):
    """The JSON nests objects/arrays deeper than the decoder's limit (MAX_JSON_DEPTH)."""

    reason = "too_deep"
