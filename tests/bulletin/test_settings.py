"""Settings that can never work are refused when they are read, in one line that names the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bulletin.errors import ConfigError
from bulletin.settings import Settings

BULLETIN = str(Path(sys.executable).parent / "bulletin")

#: (settings, the variable the message must name, a phrase it must say)
REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({"smtp_host": "smtp.example.com", "smtp_security": "none"}, "BULLETIN_SMTP_SECURITY", "loopback"),
    ({"smtp_host": "10.0.0.5", "smtp_security": "none"}, "BULLETIN_SMTP_SECURITY", "loopback"),
    ({"smtp_host": "smtp://mail.example.com", "smtp_security": "ssl"}, "BULLETIN_SMTP_HOST", "host name or IP address"),
    ({"smtp_host": "smtp.example.com", "smtp_username": "u"}, "BULLETIN_SMTP_USERNAME", "no SMTP password"),
    ({"smtp_host": "smtp.example.com", "smtp_password": SecretStr("p")}, "BULLETIN_SMTP_PASSWORD", "USERNAME"),
    ({"smtp_host": "smtp.example.com", "smtp_password_block": "b"}, "BULLETIN_SMTP_PASSWORD_BLOCK", "USERNAME"),
    ({"smtp_username": "u", "smtp_password": SecretStr("p")}, "BULLETIN_SMTP_USERNAME", "BULLETIN_SMTP_HOST"),
    ({"smtp_port": 2525}, "BULLETIN_SMTP_PORT", "BULLETIN_SMTP_HOST"),
    (
        {"smtp_host": "localhost", "smtp_security": "none", "smtp_ca_file": Path("/etc/hosts")},
        "BULLETIN_SMTP_CA_FILE",
        "never uses TLS",
    ),
    ({"smtp_host": "smtp.example.com", "smtp_ca_file": Path("/no/such/ca.pem")}, "BULLETIN_SMTP_CA_FILE", "not a file"),
    ({"smtp_from": "a@example.com, b@example.com"}, "BULLETIN_SMTP_FROM", "one mailbox"),
    ({"smtp_from": "Bulletin"}, "BULLETIN_SMTP_FROM", "one mailbox"),
    ({"email_allowed_domains": "example.com,@example.org"}, "BULLETIN_EMAIL_ALLOWED_DOMAINS", "without '@'"),
    ({"s3_endpoint_url": "http://127.0.0.1:9000"}, "BULLETIN_S3_ENDPOINT_URL", "BULLETIN_S3_BUCKET is not"),
    ({"s3_region": "eu-west-1"}, "BULLETIN_S3_REGION", "BULLETIN_S3_BUCKET is not"),
    ({"s3_kms_key_id": "alias/reports"}, "BULLETIN_S3_KMS_KEY_ID", "BULLETIN_S3_BUCKET is not"),
    ({"s3_sse": "aws:kms"}, "BULLETIN_S3_SSE", "BULLETIN_S3_BUCKET is not"),
    ({"s3_bucket": "My_Bucket"}, "BULLETIN_S3_BUCKET", "bucket name"),
    ({"s3_bucket": "reports", "s3_endpoint_url": "127.0.0.1:9000"}, "BULLETIN_S3_ENDPOINT_URL", "http(s)://"),
    ({"s3_bucket": "reports", "s3_kms_key_id": "alias/reports"}, "BULLETIN_S3_KMS_KEY_ID", "aws:kms"),
    ({"s3_bucket": "reports", "s3_prefix": "team/../other"}, "BULLETIN_S3_PREFIX", "safe key prefix"),
    ({"storage_prefix": "re ports"}, "BULLETIN_STORAGE_PREFIX", "safe key prefix"),
    ({"link_expiry_seconds": 8 * 86_400}, "BULLETIN_LINK_EXPIRY_SECONDS", "604800"),
    ({"link_expiry_seconds": 0}, "BULLETIN_LINK_EXPIRY_SECONDS", "greater than or equal to 1"),
    ({"token_ttl_minutes": 0}, "BULLETIN_TOKEN_TTL_MINUTES", "greater than or equal to 1"),
    ({"token_ttl_minutes": 61}, "BULLETIN_TOKEN_TTL_MINUTES", "less than or equal to 60"),
    ({"token_issuer": " "}, "BULLETIN_TOKEN_ISSUER", "empty"),
    ({"signing_keys": SecretStr("not json")}, "BULLETIN_SIGNING_KEYS", "JSON keyset"),
    ({"file_link_secret": SecretStr("too-short")}, "BULLETIN_FILE_LINK_SECRET", "32 characters"),
    ({"webhook_allowed_networks": "127.0.0.0/8,internal"}, "BULLETIN_WEBHOOK_ALLOWED_NETWORKS", "'internal'"),
    ({"webhook_allowed_networks": "10.0.0.0/33"}, "BULLETIN_WEBHOOK_ALLOWED_NETWORKS", "networks"),
    ({"webhook_retry_schedule": "0,5,soon"}, "BULLETIN_WEBHOOK_RETRY_SCHEDULE", "float"),
    ({"webhook_retry_schedule": ""}, "BULLETIN_WEBHOOK_RETRY_SCHEDULE", "1-30 delays"),
    ({"webhook_retry_schedule": "0,-5"}, "BULLETIN_WEBHOOK_RETRY_SCHEDULE", "0-604800 seconds"),
    ({"webhook_retry_schedule": "0,nan"}, "BULLETIN_WEBHOOK_RETRY_SCHEDULE", "0-604800 seconds"),
]


@pytest.mark.parametrize(("values", "variable", "phrase"), REFUSED, ids=[f"{r[1]}-{i}" for i, r in enumerate(REFUSED)])
def test_a_setting_that_cannot_work_is_refused_naming_it(values: dict[str, Any], variable: str, phrase: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings(**values)
    message = str(refused.value)
    assert message.startswith(variable), message
    assert phrase in message, message
    assert "\n" not in message


def test_the_same_refusal_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULLETIN_SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("BULLETIN_SMTP_SECURITY", "none")
    with pytest.raises(ConfigError, match=r"^BULLETIN_SMTP_SECURITY=none .* allowed only for a loopback"):
        Settings()


def test_secrets_are_never_echoed() -> None:
    for values in ({"signing_keys": SecretStr("s3cr3t-not-json")}, {"file_link_secret": SecretStr("s3cr3t")}):
        with pytest.raises(ConfigError) as refused:
            Settings(**values)
        assert "s3cr3t" not in str(refused.value)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", "[::1]", "127.0.0.53"])
def test_a_loopback_plaintext_server_is_accepted(host: str, tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        smtp_host=host,
        smtp_port=2525,
        smtp_security="none",
        smtp_username="bulletin",
        smtp_password=SecretStr("a password"),
        s3_bucket="reports",
        s3_endpoint_url="http://127.0.0.1:9000",
        s3_region="us-east-1",
        s3_prefix="/team-a/",
        webhook_allowed_networks=["127.0.0.0/8", "::1/128"],
        webhook_retry_schedule=[0, 5, 300],
        file_link_secret=SecretStr("x" * 32),
    )
    assert settings.smtp_host == host


def test_the_defaults_are_accepted() -> None:
    Settings()


# `serve --only api` is one process: were the settings not refused, the timeout would end it (all of serve would
# leave a Prefect server and a worker behind).
@pytest.mark.parametrize("command", [["run", "daily-account-orders"], ["serve", "--only", "api", "--port", "0"]])
def test_the_cli_refuses_before_starting_in_one_line(command: list[str], tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BULLETIN_HOME": str(tmp_path / "home"),
        "BULLETIN_SMTP_HOST": "smtp.example.com",
        "BULLETIN_SMTP_SECURITY": "none",
    }
    result = subprocess.run([BULLETIN, *command], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: BULLETIN_SMTP_SECURITY=none") and "'smtp.example.com'" in line
    assert not (tmp_path / "home").exists(), "nothing was started or written"
