"""One-click unsubscribe tokens (RFC 8058): who may stop which report's email, signed and expiring.

A token names one recipient (organisation and ref) and one report, and when it stops working. It is
``<base64url body>.<base64url HMAC-SHA256>``, the MAC taken over a purpose string and the body, so it is useless for
anything else: a download link's token (bulletin/edge/api/file_links.py) or a data token (a JWT, three parts) fails
here, and this one fails there. The body says its purpose too (``"p": "unsubscribe"``), and the key that signed it
(``k``): the ``BULLETIN_UNSUBSCRIBE_SECRET`` setting (``k`` = ``setting``) or a secret derived from a signing key of
the keyset (``k`` = its kid), so links in mail already sent keep working while that key stays in the keyset.

Minting is deterministic (the run's start is ``issued_at``): a retried send builds the same message, Message-ID
and all. The token is a credential for one small act; it is never logged (the access log writes the route with
``<token>``) nor stored. Pure: no I/O, the clock is an argument. Malformed or tampered: RequestError (400);
expired: GoneError (410).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bulletin.errors import ConfigError, GoneError, RequestError

SECRET_MIN_BYTES = 32
TOKEN_MAX = 2_048
#: The ``k`` of a token signed with the BULLETIN_UNSUBSCRIBE_SECRET setting.
SETTING_KID = "setting"
_CONTEXT = b"bulletin-unsubscribe-v1"
_PURPOSE = "unsubscribe"


@dataclass(frozen=True)
class Unsubscribe:
    """What a token grants: stop ``report_id``'s email to ``recipient`` of ``org`` ("" for none)."""

    org: str
    recipient: str
    report_id: str
    expires_at: datetime


@dataclass(frozen=True)
class UnsubscribeKeys:
    """The secrets that verify tokens, by ``k``; ``active`` signs new ones."""

    active: str
    secrets: dict[str, bytes]


def derive_secret(material: bytes) -> bytes:
    """An unsubscribe secret from other secret material (a signing key), separated by purpose."""
    if len(material) < SECRET_MIN_BYTES:
        raise ConfigError("unsubscribe secret material is too short", field="unsubscribe_secret")
    return hmac.new(material, _CONTEXT, hashlib.sha256).digest()


def mint_token(keys: UnsubscribeKeys, grant: Unsubscribe, *, issued_at: datetime) -> str:
    """The token of ``grant``, signed with the active secret."""
    body = {
        "p": _PURPOSE,
        "k": keys.active,
        "o": grant.org,
        "r": grant.recipient,
        "t": grant.report_id,
        "i": int(issued_at.timestamp()),
        "e": int(grant.expires_at.timestamp()),
    }
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64(raw)}.{_b64(_mac(_secret(keys, keys.active), raw))}"


def verify_token(keys: UnsubscribeKeys, token: str, *, now: datetime) -> Unsubscribe:
    """The grant ``token`` carries, if it is one of ours, for unsubscribing, and not expired."""
    if len(token) > TOKEN_MAX or token.count(".") != 1:
        raise _invalid()
    body_text, mac_text = token.split(".")
    try:
        raw, mac = _unb64(body_text), _unb64(mac_text)
        fields = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise _invalid() from exc
    if not isinstance(fields, dict) or fields.get("k") not in keys.secrets:
        raise _invalid()
    if not hmac.compare_digest(mac, _mac(keys.secrets[fields["k"]], raw)):
        raise _invalid()
    texts = [fields.get(name) for name in ("p", "o", "r", "t")]
    expires = fields.get("e")
    if not all(isinstance(t, str) for t in texts) or not isinstance(expires, int) or fields["p"] != _PURPOSE:
        raise _invalid()
    expires_at = datetime.fromtimestamp(expires, UTC)
    if now >= expires_at:
        raise GoneError(
            "this unsubscribe link has expired; use the link in a newer email, or ask the sender", field="token"
        )
    return Unsubscribe(org=fields["o"], recipient=fields["r"], report_id=fields["t"], expires_at=expires_at)


def grant_for(org: str | None, recipient: str, report_id: str, *, issued_at: datetime, ttl_days: int) -> Unsubscribe:
    """The grant an email sent at ``issued_at`` carries: valid ``ttl_days`` from then, in whole seconds."""
    expires_at = issued_at.replace(microsecond=0) + timedelta(days=ttl_days)
    return Unsubscribe(org=org or "", recipient=recipient, report_id=report_id, expires_at=expires_at)


def _secret(keys: UnsubscribeKeys, kid: str) -> bytes:
    secret = keys.secrets.get(kid)
    if secret is None or len(secret) < SECRET_MIN_BYTES:
        raise ConfigError(
            f"no unsubscribe secret {kid!r} of at least {SECRET_MIN_BYTES} bytes", field="unsubscribe_secret"
        )
    return secret


def _mac(secret: bytes, raw: bytes) -> bytes:
    return hmac.new(secret, _CONTEXT + b"." + raw, hashlib.sha256).digest()


def _invalid() -> RequestError:
    return RequestError("this unsubscribe link is not valid: copy the whole link from the email", field="token")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text or not text.isascii() or not text.replace("-", "").replace("_", "").isalnum():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
