"""Signed, expiring links to local-bucket files, served by the API itself (``GET /v1/files/{name}?token=...``).

The local bucket has no web server, so a job's download link for it is one of ours: a token naming the object key,
its organisation and an expiry, with an HMAC-SHA256 over those. Only the token grants access (like an S3 presigned
URL); it rides in the query string, which the access log never records. The key is checked again when served
(``tasks.storage.check_key``: no ``..``, no leading ``/``, no backslash) and the path resolved under the bucket root.

Pure: no I/O, the clock is an argument. Tampered or malformed: ForbiddenError (403); expired: GoneError (410).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bulletin.errors import ConfigError, ForbiddenError, GoneError

SECRET_MIN_BYTES = 32
TOKEN_MAX = 2_048
_CONTEXT = b"bulletin-file-link-v1"


@dataclass(frozen=True)
class FileLink:
    key: str
    org: str
    expires_at: datetime


def derive_secret(material: bytes) -> bytes:
    """A link secret from other secret material (the active signing key), separated by purpose."""
    if len(material) < SECRET_MIN_BYTES:
        raise ConfigError("file link secret material is too short", field="file_link_secret")
    return hmac.new(material, _CONTEXT, hashlib.sha256).digest()


def check_secret(secret: bytes) -> bytes:
    if len(secret) < SECRET_MIN_BYTES:
        raise ConfigError(
            f"BULLETIN_FILE_LINK_SECRET must be at least {SECRET_MIN_BYTES} characters", field="file_link_secret"
        )
    return secret


def sign_link(secret: bytes, link: FileLink) -> str:
    body = json.dumps(
        {"k": link.key, "o": link.org, "e": int(link.expires_at.timestamp())}, separators=(",", ":"), sort_keys=True
    ).encode()
    mac = hmac.new(check_secret(secret), _CONTEXT + b"." + body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(mac)}"


def verify_link(secret: bytes, token: str, *, now: datetime) -> FileLink:
    """The link ``token`` names, if its MAC verifies and it has not expired."""
    if len(token) > TOKEN_MAX or token.count(".") != 1:
        raise _forbidden()
    body_text, mac_text = token.split(".")
    try:
        body, mac = _unb64(body_text), _unb64(mac_text)
    except (binascii.Error, ValueError) as exc:
        raise _forbidden() from exc
    expected = hmac.new(check_secret(secret), _CONTEXT + b"." + body, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise _forbidden()
    try:
        fields = json.loads(body)
        key, org, expires = fields["k"], fields["o"], fields["e"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _forbidden() from exc
    if not isinstance(key, str) or not isinstance(org, str) or not isinstance(expires, int):
        raise _forbidden()
    expires_at = datetime.fromtimestamp(expires, UTC)
    if now >= expires_at:
        raise GoneError("this download link has expired; ask the API for a new one", field="token")
    return FileLink(key=key, org=org, expires_at=expires_at)


def link_expiry(now: datetime, seconds: int) -> datetime:
    """``now`` + ``seconds``, clamped to 1 s .. 7 days, whole seconds."""
    return now.replace(microsecond=0) + timedelta(seconds=max(1, min(seconds, 7 * 86_400)))


def _forbidden() -> ForbiddenError:
    return ForbiddenError("this download link is not valid", field="token")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text or not text.replace("-", "").replace("_", "").isalnum() or not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
