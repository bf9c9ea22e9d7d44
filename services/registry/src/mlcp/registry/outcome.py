"""Saving and announcing a decided ``transitions.Step``: the one write path of a model's state,
shared by the Kafka handlers and the HTTP API."""

from __future__ import annotations

from mlcp.registry.cache import model_scope
from mlcp.registry.ports import Ports
from mlcp.registry.transitions import Step
from mlcp.runtime.consumer import Tx


async def save_and_emit(tx: Tx, step: Step, ports: Ports) -> None:
    """In ``tx``: save the step's transition, append its audit rows, emit its events through
    the outbox. A step that changes nothing writes nothing."""
    if not step.changes:
        return
    transition, origin = step.transition, step.origin
    # Alias moves and status changes alter what the model's alias lookups return.
    await ports.cache.invalidate(tx.conn, model_scope(step.model))
    await ports.rollouts.apply_transition(
        tx.conn,
        step.model,
        transition,
        actor=origin.actor,
        reason=transition.reason,
        cause_event_id=origin.event_id,
        now=step.at,
    )
    for entry in step.audit:
        await ports.audit.record(tx, entry)
    for data in step.events:
        await tx.emit(data)
