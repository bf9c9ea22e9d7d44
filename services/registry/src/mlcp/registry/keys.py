"""The audit keys of the registry: Ed25519 signing keys, their ids, and the MAC keys derived
from them; where they come from (``MLCP_AUDIT_KEY`` / ``MLCP_AUDIT_KEY_FILE``).

A keyring is text with one key per line, ``ed25519:<base64 of the 32-byte private seed>``
(``#`` starts a comment; in ``MLCP_AUDIT_KEY`` keys may also be separated by spaces or commas).
The **first** key is the active one: it keys new audit rows and signs checkpoints. The others
are retired keys, kept so that the rows and checkpoints they made still verify after a rotation.
A key's id is the first 16 hex digits of the SHA-256 of its raw public key; rows and checkpoints
name the id of the key that made them.

Each key does two jobs with two separate secrets: the Ed25519 key signs checkpoints, and an
HMAC-SHA256 key derived from the same seed with HKDF keys the rows' hashes. Neither is ever in
the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlcp.runtime.settings import ConfigurationError

log = logging.getLogger(__name__)

KEY_PREFIX = "ed25519:"
_MAC_INFO = b"mlcp registry audit chain: row MAC key v1"
_SEPARATORS = re.compile(r"[\s,]+")


class AuditSettings(BaseSettings):
    """Where the audit keyring comes from (prefix ``MLCP_AUDIT_``)."""

    model_config = SettingsConfigDict(
        env_prefix="MLCP_AUDIT_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    key: SecretStr | None = None
    """The keyring itself (one or more keys; the first is active)."""
    key_file: Path | None = None
    """A file holding the keyring (a mounted secret); mode 0600."""
    key_create: bool = False
    """Development only: create a keyring with a fresh key at ``key_file`` if it is missing."""


@dataclass(frozen=True)
class AuditKey:
    """One key: its id, the Ed25519 key that signs checkpoints, the HMAC key of row hashes."""

    key_id: str
    signing_key: Ed25519PrivateKey
    mac_key: bytes

    @property
    def public_key_hex(self) -> str:
        """The raw Ed25519 public key, hex: what a third party needs to check checkpoints."""
        return self.signing_key.public_key().public_bytes_raw().hex()

    def sign(self, message: bytes) -> str:
        """The Ed25519 signature of ``message``, hex."""
        return self.signing_key.sign(message).hex()

    def verifies(self, message: bytes, signature_hex: str) -> bool:
        """Whether ``signature_hex`` is this key's signature of ``message``."""
        return verify_signature(self.signing_key.public_key(), message, signature_hex)


def verify_signature(public: Ed25519PublicKey, message: bytes, signature_hex: str) -> bool:
    """Whether ``signature_hex`` is ``public``'s Ed25519 signature of ``message``."""
    try:
        public.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def key_id(public: Ed25519PublicKey) -> str:
    """The id of a key: the first 16 hex digits of the SHA-256 of its raw public key."""
    return hashlib.sha256(public.public_bytes_raw()).hexdigest()[:16]


def key_from_seed(seed: bytes) -> AuditKey:
    """The ``AuditKey`` of a 32-byte Ed25519 private seed."""
    signing = Ed25519PrivateKey.from_private_bytes(seed)
    mac = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_MAC_INFO).derive(seed)
    return AuditKey(key_id(signing.public_key()), signing, mac)


def new_key_text() -> str:
    """A fresh key in keyring form: ``ed25519:<base64 seed>``."""
    return KEY_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class Keyring:
    """The active key and every key that may have keyed a row or signed a checkpoint."""

    def __init__(self, keys: Iterable[AuditKey]) -> None:
        ordered = list(keys)
        if not ordered:
            raise ValueError("a keyring needs at least one key")
        self.active = ordered[0]
        self._by_id = {k.key_id: k for k in ordered}

    def get(self, key_id: str) -> AuditKey | None:
        """The key with this id, or None when the keyring does not hold it."""
        return self._by_id.get(key_id)

    def mac_key(self, key_id: str) -> bytes | None:
        """The row-hash key of ``key_id``, or None when unknown."""
        key = self._by_id.get(key_id)
        return None if key is None else key.mac_key

    @property
    def key_ids(self) -> list[str]:
        """Ids of every key, the active one first."""
        return list(self._by_id)


def parse_keyring(text: str, *, where: str) -> Keyring:
    """Parse keyring text; ``ValueError`` naming ``where`` and the entry (never its value)."""
    keys = []
    lines = (line.split("#", 1)[0] for line in text.splitlines())
    entries = [e for line in lines for e in _SEPARATORS.split(line.strip()) if e]
    for number, entry in enumerate(entries, start=1):
        if not entry.startswith(KEY_PREFIX):
            raise ValueError(f"{where}: key {number} does not start with {KEY_PREFIX!r}")
        try:
            seed = base64.b64decode(entry[len(KEY_PREFIX) :], validate=True)
        except binascii.Error:
            raise ValueError(f"{where}: key {number} is not valid base64") from None
        if len(seed) != 32:
            raise ValueError(f"{where}: key {number} is {len(seed)} bytes, not 32")
        keys.append(key_from_seed(seed))
    if not keys:
        raise ValueError(f"{where} holds no key")
    return Keyring(keys)


def _create_keyring_file(path: Path) -> None:
    """Write a keyring with one fresh key at ``path`` (0600), unless another process did first."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(
            "# mlcp registry audit keyring: the first key is active, the others are retired.\n"
            + new_key_text()
            + "\n"
        )
    try:
        os.link(temporary, path)  # atomic, and fails if a key appeared there meanwhile
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


def load_keyring(settings: AuditSettings) -> Keyring:
    """The keyring the settings name; ``ConfigurationError`` when there is none or it is bad.

    The registry never runs without a key: with neither ``MLCP_AUDIT_KEY`` nor
    ``MLCP_AUDIT_KEY_FILE`` it refuses to start, and it creates a key only when told to
    (``MLCP_AUDIT_KEY_CREATE``, for development), saying so loudly.
    """
    if settings.key is not None and settings.key_file is not None:
        raise ConfigurationError("set MLCP_AUDIT_KEY or MLCP_AUDIT_KEY_FILE, not both")
    try:
        if settings.key is not None:
            return parse_keyring(settings.key.get_secret_value(), where="MLCP_AUDIT_KEY")
        if settings.key_file is None:
            raise ConfigurationError(
                "no audit key: set MLCP_AUDIT_KEY_FILE to a keyring made with "
                "`python -m mlcp.registry audit-keygen` (or MLCP_AUDIT_KEY to its content); "
                "in development MLCP_AUDIT_KEY_CREATE=true creates one at MLCP_AUDIT_KEY_FILE"
            )
        path = settings.key_file.expanduser()
        if not path.exists() and settings.key_create:
            _create_keyring_file(path)
            log.warning(
                "AUDIT KEY CREATED at %s (MLCP_AUDIT_KEY_CREATE): keep this file and back it "
                "up — without it the audit log can no longer be verified. For production, give "
                "the registry a key from your secret store and leave MLCP_AUDIT_KEY_CREATE unset.",
                path,
            )
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("the audit keyring %s is readable by others: chmod 600 it", path)
        return parse_keyring(path.read_text(), where=f"MLCP_AUDIT_KEY_FILE ({path})")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the audit keyring (MLCP_AUDIT_KEY_FILE): {exc.strerror}: {exc.filename}"
        ) from None
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
