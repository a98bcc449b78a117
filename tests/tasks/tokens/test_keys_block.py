"""Signing keys from a Prefect Secret block, against the session's real Prefect API."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bulletin.errors import ConfigError
from bulletin.settings import Settings
from tasks.tokens import generate_key, load_keyset, public_jwks
from tasks.tokens.keys import keyset_to_json

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_keyset_from_a_secret_block(tmp_path: Path) -> None:
    from prefect.blocks.system import Secret

    keyset = generate_key(None, now=datetime.now(UTC))
    Secret(value=keyset_to_json(keyset)).save("bulletin-test-keys", overwrite=True)
    settings = Settings(home=tmp_path, signing_keys_block="bulletin-test-keys")
    loaded = load_keyset(settings)
    assert loaded.active_kid == keyset.active_kid
    assert public_jwks(loaded) == public_jwks(keyset)
    assert not (tmp_path / "keys").exists(), "the block, not a file, was the source"


def test_a_missing_block_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_keyset(Settings(home=tmp_path, signing_keys_block="no-such-block"))
    assert "no-such-block" in str(info.value)
