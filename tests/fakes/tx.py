"""A transaction that records what a handler emits instead of writing the outbox."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from mlcp.contracts import CloudEvent
from mlcp.runtime import outbox
from mlcp.runtime.consumer import Tx
from mlcp.runtime.outbox import Cause
from mlcp.runtime.settings import Settings


class RecordingTx(Tx):
    """A ``Tx`` with no connection: ``emit`` builds the event exactly as the real one does
    (ids, cause, correlation id) and appends it to ``emitted``; nothing reaches an outbox.

    ``conn`` is the fake store's handle (any object): the handler passes it to the store
    functions it was given, and a fake store ignores or uses it as it likes.
    """

    def __init__(
        self,
        *,
        service: str,
        cause: CloudEvent[Any] | None = None,
        correlationid: str | None = None,
        conn: Any = None,
    ) -> None:
        super().__init__(
            conn,
            service=service,
            settings=Settings(),
            cause=cause,
            correlationid=correlationid,
        )

    async def emit(
        self,
        data: BaseModel,
        *,
        subject: str | None = None,
        cause: Cause | None = None,
        correlationid: str | None = None,
    ) -> CloudEvent[Any]:
        event = outbox.new_outgoing(
            data,
            service=self._service,
            cause=cause or self.cause,
            subject=subject,
            correlationid=correlationid or self._correlationid,
        )
        self.emitted.append(event)
        return event

    async def emit_many(
        self, items: Sequence[tuple[BaseModel, CloudEvent[Any] | None]]
    ) -> list[CloudEvent[Any]]:
        return [await self.emit(data, cause=cause) for data, cause in items]

    def emitted_types(self) -> list[str]:
        """The CloudEvents types emitted, in order."""
        return [event.type for event in self.emitted]
