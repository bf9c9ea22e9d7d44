"""Crash points for fault-injection tests.

``MLCP_CRASH_AT=<point>`` makes the process kill itself with SIGKILL when it reaches that point,
the way a power cut or an OOM kill would: no ``finally`` blocks, no flush, no offset commit. The
integration suite uses it to prove that the inbox and outbox survive a crash at the worst moment.
Unset (the default) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

# Points the runtime exposes; tests name them, so keep the names stable.
OUTBOX_AFTER_PUBLISH = "outbox.after_publish"  # published to Kafka, row not yet marked sent
CONSUMER_AFTER_COMMIT = "consumer.after_commit"  # handler transaction committed, offset not


def crash_point(name: str) -> None:
    """SIGKILL this process if ``MLCP_CRASH_AT`` names ``name``."""
    if os.environ.get("MLCP_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
