"""Unsubscribe tokens: one valid token, then one thing broken per test (the standard-webhooks test shape)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from bulletin.edge.api.file_links import FileLink, sign_link
from bulletin.errors import GoneError, RequestError
from bulletin.unsubscribe import SETTING_KID, Unsubscribe, UnsubscribeKeys, grant_for, mint_token, verify_token

T0 = datetime(2026, 12, 10, 6, 30, tzinfo=UTC)
SECRET = b"s" * 32
KEYS = UnsubscribeKeys(SETTING_KID, {SETTING_KID: SECRET})
GRANT = grant_for("acme", "rm-ann", "weekly-regional-sales", issued_at=T0, ttl_days=60)


def token() -> str:
    return mint_token(KEYS, GRANT, issued_at=T0)


def test_a_valid_token_names_the_recipient_and_the_report_until_it_expires() -> None:
    found = verify_token(KEYS, token(), now=T0 + timedelta(days=59))
    assert found == Unsubscribe("acme", "rm-ann", "weekly-regional-sales", T0 + timedelta(days=60))
    assert token() == token(), "deterministic: a retried send builds the same message"
    assert grant_for(None, "x", "r", issued_at=T0, ttl_days=1).org == ""


def test_the_ttl_is_the_setting_in_days_exactly() -> None:
    body = json.loads(base64.urlsafe_b64decode(token().split(".")[0] + "=="))
    assert body["e"] - body["i"] == 60 * 86_400


def test_an_expired_token_is_gone() -> None:
    with pytest.raises(GoneError, match="expired"):
        verify_token(KEYS, token(), now=T0 + timedelta(days=60))


def test_a_tampered_body_is_refused() -> None:
    body, mac = token().split(".")
    raw = json.loads(base64.urlsafe_b64decode(body + "=="))
    raw["r"] = "rm-bob"
    forged = base64.urlsafe_b64encode(json.dumps(raw, separators=(",", ":")).encode()).decode().rstrip("=")
    with pytest.raises(RequestError, match="not valid"):
        verify_token(KEYS, f"{forged}.{mac}", now=T0)


def test_another_secret_is_refused() -> None:
    other = UnsubscribeKeys(SETTING_KID, {SETTING_KID: b"o" * 32})
    with pytest.raises(RequestError):
        verify_token(other, token(), now=T0)


def test_a_key_no_longer_known_is_refused_and_a_known_old_one_verifies() -> None:
    old = UnsubscribeKeys("k1", {"k1": b"1" * 32})
    minted = mint_token(old, GRANT, issued_at=T0)
    assert verify_token(UnsubscribeKeys("k2", {"k1": b"1" * 32, "k2": b"2" * 32}), minted, now=T0).recipient == "rm-ann"
    with pytest.raises(RequestError):
        verify_token(UnsubscribeKeys("k2", {"k2": b"2" * 32}), minted, now=T0)


def test_a_token_for_another_purpose_is_refused() -> None:
    link = sign_link(SECRET, FileLink(key="reports/a.pdf", org="acme", expires_at=T0 + timedelta(days=1)))
    with pytest.raises(RequestError):
        verify_token(KEYS, link, now=T0)
    jwt_like = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJybS1hbm4ifQ.c2ln"
    with pytest.raises(RequestError):
        verify_token(KEYS, jwt_like, now=T0)


@pytest.mark.parametrize("bad", ["", ".", "abc", "a.b.c", "!!.??", "x" * 3000, "é.é"])
def test_malformed_tokens_are_refused_never_raising_anything_else(bad: str) -> None:
    with pytest.raises(RequestError):
        verify_token(KEYS, bad, now=T0)
