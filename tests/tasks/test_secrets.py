"""Prefect Secret blocks read in one place (tasks.secrets), against the session's real Prefect API; and an SMTP
password from a block, the one block setting no other test reads."""

from __future__ import annotations

import socket

import pytest

from bulletin.errors import ConfigError, TransientError
from bulletin.settings import Settings
from tasks.email.send import make_sender
from tasks.secrets import read_secret_block


@pytest.mark.usefixtures("prefect_api")
def test_a_block_is_read_and_a_missing_one_is_a_clear_error_without_its_value() -> None:
    from prefect.blocks.system import Secret

    Secret(value="s3cr3t-value").save("bulletin-test-secret", overwrite=True)
    assert read_secret_block("bulletin-test-secret") == "s3cr3t-value"
    with pytest.raises(ConfigError, match="'no-such-secret' holding the SMTP password"):
        read_secret_block("no-such-secret", holding="the SMTP password")


@pytest.mark.usefixtures("prefect_api")
def test_an_smtp_password_block_that_holds_no_text_is_refused() -> None:
    from prefect.blocks.system import Secret

    Secret(value={"not": "text"}).save("bulletin-test-smtp-json", overwrite=True)
    settings = Settings(smtp_host="127.0.0.1", smtp_username="u", smtp_password_block="bulletin-test-smtp-json")
    with pytest.raises(ConfigError, match="must hold the SMTP password as a string"):
        make_sender(settings)


def test_an_unreachable_prefect_is_transient_not_a_traceback() -> None:
    """Before: httpx.ConnectError escaped every block reader (it is not an OSError)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{closed}/api"}), pytest.raises(TransientError) as info:
        read_secret_block("any-block")
    assert "any-block" in str(info.value)
