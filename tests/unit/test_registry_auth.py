"""Registry tokens: only a salted scrypt hash is stored; verification; bootstrap settings."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from mlcp.registry.auth import RegistrySettings, hash_secret, new_token, verify_secret

pytestmark = pytest.mark.unit


def test_new_token_has_id_and_secret_and_only_its_hash_is_kept() -> None:
    token_id, token, stored = new_token()
    match = re.fullmatch(r"mlcp_([0-9a-f]{16})_([A-Za-z0-9_-]{43})", token)
    assert match is not None
    assert match.group(1) == token_id
    secret = match.group(2)
    assert secret not in stored
    assert stored.startswith("scrypt$")
    assert verify_secret(secret, stored)
    assert not verify_secret(secret[:-1] + ("A" if secret[-1] != "A" else "B"), stored)


def test_same_secret_hashes_differently_per_salt() -> None:
    assert hash_secret("s" * 43) != hash_secret("s" * 43)


@pytest.mark.parametrize("stored", ["", "plain", "md5$00$00", "scrypt$zz$00"])
def test_malformed_stored_hash_never_verifies(stored: str) -> None:
    assert verify_secret("x", stored) is False


def test_bootstrap_token_is_read_from_the_environment_and_must_be_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLCP_REGISTRY_BOOTSTRAP_TOKEN", "t" * 40)
    token = RegistrySettings().bootstrap_token
    assert token is not None
    assert token.get_secret_value() == "t" * 40
    assert "t" * 40 not in repr(RegistrySettings())
    monkeypatch.setenv("MLCP_REGISTRY_BOOTSTRAP_TOKEN", "short")
    with pytest.raises(ValidationError, match="at least 32"):
        RegistrySettings()


def test_short_bootstrap_token_stops_the_start_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlcp.registry.app import build
    from mlcp.runtime.settings import ConfigurationError, Settings

    monkeypatch.setenv("MLCP_REGISTRY_BOOTSTRAP_TOKEN", "sekrit")
    with pytest.raises(ConfigurationError, match="MLCP_REGISTRY_BOOTSTRAP_TOKEN") as info:
        build(Settings())
    assert "sekrit" not in str(info.value)
