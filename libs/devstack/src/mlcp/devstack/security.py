"""The dev stack's bus identities: one SCRAM password per principal and a TLS certificate.

Every principal of the ACL file (``mlcp/policy/acls.yaml``) gets a random password in
``<state>/devstack/kafka/credentials/<principal>`` (directory 0700, files 0600): a process of
this user reads the file it is pointed at (``MLCP_KAFKA_PASSWORD_FILE``), nobody else can.
The broker's TLS listener uses a certificate for 127.0.0.1 / localhost signed by a CA made here
(``tls/ca.pem`` is what clients verify with, ``MLCP_KAFKA_CA_FILE``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlcp.devstack.config import DevstackError, Settings

if TYPE_CHECKING:
    from mlcp.runtime.settings import Settings as RuntimeSettings

CONTROLLER_USER = "controller"  # the KRaft controller listener's own (SASL/PLAIN) identity


def principals() -> list[str]:
    """Every principal of the ACL file that ships with mlcp (the admin first)."""
    from mlcp.policy.acl import load_policy

    policy = load_policy()
    return [policy.admin, *(name for name in policy.principals if name != policy.admin)]


def admin_principal() -> str:
    from mlcp.policy.acl import load_policy

    return load_policy().admin


def credentials_dir(s: Settings) -> Path:
    return s.kafka_dir / "credentials"


def password_file(s: Settings, principal: str) -> Path:
    return credentials_dir(s) / principal


def _write_secret(path: Path, text: str) -> None:
    from mlcp.runtime.bus import write_secret

    write_secret(path, text)


def ensure_credentials(s: Settings) -> dict[str, str]:
    """principal → password, creating a random password for any principal that has none."""
    from mlcp.runtime.bus import ensure_password_files

    try:
        return ensure_password_files(credentials_dir(s), [*principals(), CONTROLLER_USER])
    except ValueError as exc:
        raise DevstackError(f"{exc}: `mlcp-dev password PRINCIPAL` sets a new one") from None


def read_password(path: Path) -> str:
    try:
        first = path.read_text().splitlines()
    except OSError as exc:
        raise DevstackError(f"cannot read the bus password in {path}: {exc.strerror}") from None
    if not first or not first[0]:
        raise DevstackError(f"{path} is empty: `mlcp-dev password PRINCIPAL` sets a new one")
    return first[0]


def set_password(s: Settings, principal: str, password: str | None = None) -> str:
    """Write a new password for ``principal`` (random unless given); returns it."""
    new = password or secrets.token_urlsafe(24)
    credentials_dir(s).mkdir(parents=True, exist_ok=True)
    _write_secret(password_file(s, principal), new + "\n")
    return new


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate clients verify the broker with
    keystore: Path  # PKCS#12: the broker's key and certificate chain
    keystore_password: str


def tls_dir(s: Settings) -> Path:
    return s.kafka_dir / "tls"


def ensure_tls(s: Settings) -> TlsFiles:
    """The CA and the broker's PKCS#12 keystore, made once (valid ten years)."""
    folder = tls_dir(s)
    ca_path, keystore, secret = folder / "ca.pem", folder / "broker.p12", folder / "broker.pass"
    if ca_path.exists() and keystore.exists() and secret.exists():
        return TlsFiles(ca_path, keystore, read_password(secret))
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=3650)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlcp dev stack CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    password = secrets.token_urlsafe(18)
    blob = pkcs12.serialize_key_and_certificates(
        b"broker", key, cert, [ca_cert], serialization.BestAvailableEncryption(password.encode())
    )
    _write_secret(secret, password + "\n")
    partial = keystore.with_name(".broker.p12.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(blob)
    partial.replace(keystore)
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(ca_path, keystore, password)


# -- the running broker --------------------------------------------------------------------------
def client_settings(s: Settings, principal: str) -> RuntimeSettings:
    """mlcp.runtime settings that reach this stack's Kafka as ``principal``."""
    from mlcp.runtime.settings import Settings as RuntimeSettings

    return RuntimeSettings(
        kafka_bootstrap=s.bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_username=principal,
        kafka_password=None,
        kafka_password_file=password_file(s, principal),
        kafka_ca_file=None,
    )


def _synced_file(s: Settings) -> Path:
    return credentials_dir(s) / ".synced.json"


def _fingerprint(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def secure_bus(s: Settings, progress: Callable[[str], None], *, timeout: float = 90.0) -> None:
    """Bring the running broker in line with the ACL file: every principal's SCRAM user with
    the password in its file (new or changed ones are set), the topics and the ACLs."""
    asyncio.run(_secure_bus(s, progress, timeout))


async def _secure_bus(s: Settings, progress: Callable[[str], None], timeout: float) -> None:
    from aiokafka.errors import KafkaError

    from mlcp.policy.acl import load_policy
    from mlcp.runtime.bus import apply, set_passwords

    passwords = ensure_credentials(s)
    admin = admin_principal()
    settings = client_settings(s, admin)
    try:
        synced = json.loads(_synced_file(s).read_text())
    except (OSError, ValueError):
        synced = {}
    changed = {
        user: password
        for user, password in passwords.items()
        if user not in (admin, CONTROLLER_USER) and synced.get(user) != _fingerprint(password)
    }
    deadline = time.monotonic() + timeout
    while True:
        try:
            if changed:
                await set_passwords(settings, changed)
                progress(f"bus users set: {', '.join(sorted(changed))}")
            result = await apply(settings, load_policy())
            break
        except KafkaError as exc:
            # The broker answers before it has registered itself: retry until it serves.
            if time.monotonic() > deadline:
                raise DevstackError(
                    f"Kafka did not accept the admin's requests within {timeout:.0f} s ({exc!r})"
                ) from None
            await asyncio.sleep(0.5)
    _write_secret(
        _synced_file(s),
        json.dumps({user: _fingerprint(p) for user, p in passwords.items()}),
    )
    if not result.empty:
        progress(
            f"bus: {len(result.missing_topics)} topics created, {len(result.configs)} topic "
            f"configurations set, {len(result.add)} ACLs added, {len(result.remove)} removed "
            "(mlcp/policy/acls.yaml)"
        )
