"""Thin subscribers: an alert-worthy event → an alert and its pending deliveries, in the inbox
transaction. Nothing is sent here; the delivery loop sends from the table."""

from __future__ import annotations

import logging
from typing import Any

from mlcp.contracts import CloudEvent
from mlcp.notifier import store
from mlcp.notifier.domain import alert_from_event, route
from mlcp.policy.platform import Notifications
from mlcp.runtime import Handler, Tx

log = logging.getLogger(__name__)


def alert_handler(notifications: Notifications) -> Handler:
    """The handler of GateFailed, DriftDetected, ModelRolledBack, RunFailed, ApprovalRequested
    and ModelPromoted: route the alert and record one pending delivery per channel."""

    async def on_alert_event(event: CloudEvent[Any], tx: Tx) -> None:
        alert = alert_from_event(event)
        if alert is None:
            return
        channels = route(notifications, alert)
        if not await store.record_alert(tx.conn, alert, channels):
            # The inbox already drops a redelivered event; this is the table's own guard.
            log.info("%s for %s: event %s recorded before", alert.kind, alert.model, event.id)
        elif not channels:
            log.info("%s for %s matches no route: recorded, not sent", alert.kind, alert.model)

    return on_alert_event
