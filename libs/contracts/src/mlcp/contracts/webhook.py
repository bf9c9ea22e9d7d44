"""The signed-webhook scheme: what the notifier sends and what a receiver checks.

A generic webhook target with a secret gets two headers: ``X-Mlcp-Timestamp`` (Unix seconds)
and ``X-Mlcp-Signature`` (``sha256=<hex>`` HMAC of ``"<timestamp>." + body``). It is part of the
platform's public contract with receivers, so it lives here rather than in the notifier.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Mlcp-Signature"
TIMESTAMP_HEADER = "X-Mlcp-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` HMAC of ``"<timestamp>." + body``; the timestamp defeats replays."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Check a webhook signature in constant time (for receivers, and the development sink)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
