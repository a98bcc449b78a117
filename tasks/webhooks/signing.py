"""Webhook signatures, out and in: Standard Webhooks, dbt Cloud, GitHub, and ES256-signed JWT bodies.

Pure functions, no I/O; the clock is always an argument. The rules are in ``notes/security.md`` ("Signed webhooks
out", "Signed webhooks in"); the shape follows the reference ``standardwebhooks`` library (empty secrets refused,
``whsec_`` stripped, a timestamp window, several signatures accepted, ``hmac.compare_digest``) with stricter parsing.

Errors: ``SignatureError`` (HTTP 401) when a signature is missing or does not verify, or a timestamp is outside the
window; ``RequestError`` (HTTP 400) when a header or body cannot be read at all; ``ConfigError`` when a secret or key
we were given is unusable. Reasons are fixed short strings: never a secret, a signature or a whole header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bulletin.clock import require_aware
from bulletin.errors import ConfigError, RequestError, SignatureError

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks secret prefix, not a secret
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64
DEFAULT_TOLERANCE_SECONDS = 300
MAX_TOLERANCE_SECONDS = 3_600
#: Bounds the work an unauthenticated request can make us do (rotation needs 2-3 entries, not dozens).
MAX_SIGNATURE_HEADER_CHARS = 4_096
MAX_SIGNATURES = 16
MAX_MESSAGE_ID_CHARS = 256
#: Header names in lookup order: Standard Webhooks first, then the Svix names some senders still use.
_HEADER_NAMES = {
    "id": ("webhook-id", "svix-id"),
    "timestamp": ("webhook-timestamp", "svix-timestamp"),
    "signature": ("webhook-signature", "svix-signature"),
}
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")

#: ES256 bodies (Vizzly-style): the only algorithm, the header parameters we read, and a bounded clock skew.
JWT_ALGORITHM = "ES256"
JWT_ALLOWED_HEADERS = frozenset({"alg", "typ", "kid", "cty"})
JWT_CLOCK_SKEW_SECONDS = 30
MAX_JWT_AGE_SECONDS = 86_400


# --- Standard Webhooks: secrets and signing (out) ---


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(32)).decode("ascii")


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret, or ``ConfigError`` (the message never contains the secret)."""
    if not isinstance(secret, str) or not secret.removeprefix(SECRET_PREFIX):
        raise ConfigError("webhook secret is empty")
    encoded = secret.removeprefix(SECRET_PREFIX)
    # Svix-generated secrets are unpadded base64: restore the padding rather than refuse them.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        # `from None`: nothing derived from the secret travels with the error.
        raise ConfigError("webhook secret is not valid base64 after the whsec_ prefix") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ConfigError(f"webhook secret must decode to {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes")
    return key


def _keys(secrets: Sequence[str]) -> list[bytes]:
    # A bare string is a Sequence[str] too: it would be read one character at a time.
    if isinstance(secrets, str | bytes) or not secrets:
        raise ConfigError("webhook secrets must be a non-empty list of whsec_ secrets")
    return [secret_bytes(secret) for secret in secrets]


def _signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>`` per secret, space-separated (for rotation)."""
    if not isinstance(msg_id, str) or not _VISIBLE_ASCII.fullmatch(msg_id) or len(msg_id) > MAX_MESSAGE_ID_CHARS:
        raise ConfigError(f"webhook message id must be 1-{MAX_MESSAGE_ID_CHARS} visible ASCII characters")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ConfigError("webhook timestamp must be a non-negative integer (Unix seconds)")
    content = _signed_content(msg_id, timestamp, body)
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode("ascii")
        for key in _keys(secrets)
    )


def standard_headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (same id on every retry, fresh timestamp each time)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, msg_id, timestamp, body),
    }


# --- Standard Webhooks: verification (in) ---


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    # items(), not keys(): multi-dict headers (Starlette) list a repeated header once per value.
    for name, value in headers.items():
        key = name.lower()
        if key in out and out[key] != value:
            raise RequestError(f"{key} header is repeated", field=key)
        out[key] = value
    return out


def _header(headers: dict[str, str], what: str) -> tuple[str, str]:
    for name in _HEADER_NAMES[what]:
        value = headers.get(name)
        if value:
            return name, value
    raise SignatureError(f"missing {_HEADER_NAMES[what][0]} header")


def _given_signatures(value: str) -> list[bytes]:
    if len(value) > MAX_SIGNATURE_HEADER_CHARS:
        raise RequestError("webhook-signature header is too long", field="webhook-signature")
    entries = value.split()
    if len(entries) > MAX_SIGNATURES:
        raise RequestError("webhook-signature header has too many signatures", field="webhook-signature")
    out = []
    for entry in entries:
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue  # other schemes (v1a asymmetric, future versions) are skipped, as the spec says
        try:
            out.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue  # an undecodable signature is one that does not match
    return out


def verify_standard(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> str:
    """Verify a Standard Webhooks (or Svix) request and return its message id, for replay detection.

    Accepted when ANY ``v1`` signature in the header matches ANY of ``secrets`` (several while one rotates) and the
    timestamp is within ``tolerance_seconds`` of ``now`` either way.
    """
    require_aware(now)
    if isinstance(tolerance_seconds, bool) or not 0 < tolerance_seconds <= MAX_TOLERANCE_SECONDS:
        raise ConfigError(f"webhook timestamp tolerance must be 1-{MAX_TOLERANCE_SECONDS} seconds")
    keys = _keys(secrets)
    lowered = _lowered(headers)
    id_name, msg_id = _header(lowered, "id")
    ts_name, raw_timestamp = _header(lowered, "timestamp")
    _, raw_signature = _header(lowered, "signature")
    if not _VISIBLE_ASCII.fullmatch(msg_id) or len(msg_id) > MAX_MESSAGE_ID_CHARS:
        raise RequestError(f"{id_name} header is malformed", field=id_name)
    if not _TIMESTAMP.fullmatch(raw_timestamp.strip()):
        raise RequestError(f"{ts_name} header is not an integer", field=ts_name)
    timestamp = int(raw_timestamp)
    # The window first, as the reference library does: a stale message is refused without any HMAC work.
    clock = now.timestamp()
    if timestamp < clock - tolerance_seconds:
        raise SignatureError("webhook timestamp is too old")
    if timestamp > clock + tolerance_seconds:
        raise SignatureError("webhook timestamp is too far in the future")
    given = _given_signatures(raw_signature)
    content = _signed_content(msg_id, timestamp, body)
    expected = [hmac.new(key, content, hashlib.sha256).digest() for key in keys]
    if any(hmac.compare_digest(e, g) for e in expected for g in given):
        return msg_id
    raise SignatureError("no webhook signature matches")


# --- dbt Cloud and GitHub (in; dbt style also out) ---


def dbt_signature(secret: str, body: bytes) -> str:
    """dbt Cloud's ``Authorization`` value: hex HMAC-SHA256 of the raw body, keyed by the secret's UTF-8 bytes."""
    if not isinstance(secret, str) or not secret:
        raise ConfigError("dbt webhook secret is empty")
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _hex_matches(expected_hex: str, given: str) -> bool:
    if not _HEX_SHA256.fullmatch(given):
        return False
    return hmac.compare_digest(expected_hex.encode("ascii"), given.lower().encode("ascii"))


def verify_dbt(secret: str, authorization: str | None, body: bytes) -> None:
    """Verify a dbt Cloud webhook. dbt signs no timestamp: dedupe on ``eventId`` and bound the body's age yourself."""
    expected = dbt_signature(secret, body)
    if not authorization or not authorization.strip():
        raise SignatureError("missing Authorization header")
    if not _hex_matches(expected, authorization.strip()):
        raise SignatureError("dbt Cloud signature does not match")


def verify_github(secret: str, signature_header: str | None, body: bytes) -> None:
    """Verify GitHub's ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``."""
    if not isinstance(secret, str) or not secret:
        raise ConfigError("GitHub webhook secret is empty")
    if not signature_header or not signature_header.strip():
        raise SignatureError("missing X-Hub-Signature-256 header")
    scheme, _, given = signature_header.strip().partition("=")
    if scheme != "sha256":
        raise SignatureError("X-Hub-Signature-256 must start with sha256=")
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    if not _hex_matches(expected, given):
        raise SignatureError("GitHub signature does not match")


# --- ES256-signed JWT bodies (in, Vizzly-style) ---


@lru_cache(maxsize=32)
def _public_key(pem: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm) as exc:
        raise ConfigError("a configured webhook public key is not a PEM public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError("a configured webhook public key is not a P-256 (ES256) key")
    return key


def _numeric_claim(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SignatureError(f"token claim {name} is not a number")
    return float(value)


def _check_times(claims: dict[str, Any], now: datetime, max_age: int) -> None:
    exp, iat, nbf = (_numeric_claim(claims, name) for name in ("exp", "iat", "nbf"))
    clock = now.timestamp()
    if exp is None and iat is None:
        raise SignatureError("token has neither exp nor iat")
    if exp is not None and exp <= clock - JWT_CLOCK_SKEW_SECONDS:
        raise SignatureError("token has expired")
    if nbf is not None and nbf > clock + JWT_CLOCK_SKEW_SECONDS:
        raise SignatureError("token is not yet valid")
    if iat is not None:
        if iat > clock + JWT_CLOCK_SKEW_SECONDS:
            raise SignatureError("token was issued in the future")
        if clock - iat > max_age:
            raise SignatureError("token is too old")
    # With exp alone the age is unknown; bounding the remaining life bounds how long a jti must be remembered.
    elif exp is not None and exp - clock > max_age + JWT_CLOCK_SKEW_SECONDS:
        raise SignatureError("token lives longer than the accepted age")


def verify_jwt_es256(
    public_keys_pem: Sequence[str],
    token: str | bytes,
    *,
    now: datetime,
    audience: str | None = None,
    issuer: str | None = None,
    max_age_seconds: int = 300,
) -> dict[str, Any]:
    """Verify a body that is a compact ES256 JWS/JWT (Vizzly-style) and return its claims.

    The algorithm is fixed to ES256 (``none``, HS* and everything else refused), header parameters that name keys
    (``jku``, ``x5u``, ``jwk``, ``x5c``...) are refused, ``jti`` is required (the caller records it to detect
    replays for ``max_age_seconds``), and ``exp`` or ``iat`` is required and checked against ``now``. A token with
    an ``aud`` is refused unless ``audience`` is given and matches (PyJWT's rule, kept on purpose).
    """
    require_aware(now)
    if isinstance(max_age_seconds, bool) or not 0 < max_age_seconds <= MAX_JWT_AGE_SECONDS:
        raise ConfigError(f"token max age must be 1-{MAX_JWT_AGE_SECONDS} seconds")
    if isinstance(public_keys_pem, str | bytes) or not public_keys_pem:
        raise ConfigError("at least one webhook public key must be configured")
    keys = [_public_key(pem) for pem in public_keys_pem]
    text = _compact_jws(token)
    _check_jwt_header(text)
    for key in keys:
        claims = _decode_jwt(text, key, audience=audience, issuer=issuer)
        if claims is None:
            continue  # try the next configured key (one is being rotated in or out)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_MESSAGE_ID_CHARS:
            raise SignatureError("token jti is empty or malformed")
        _check_times(claims, now, max_age_seconds)
        return claims
    raise SignatureError("token signature does not verify with any configured key")


def _compact_jws(token: str | bytes) -> str:
    """The token as text of three dot-separated parts, or RequestError."""
    try:
        text = token.decode("ascii") if isinstance(token, bytes) else token
    except UnicodeDecodeError:
        raise RequestError("body is not a compact JWS") from None
    parts = text.strip().split(".")
    # An empty third part is allowed here so that alg "none" is refused as such, below.
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise RequestError("body is not a compact JWS")
    return ".".join(parts)


def _check_jwt_header(text: str) -> None:
    """Refuse a header that names a key or an algorithm other than ES256, before any key is tried."""
    try:
        header = jwt.get_unverified_header(text)
    except jwt.PyJWTError:
        raise RequestError("token header is malformed") from None
    extra = sorted(set(header) - JWT_ALLOWED_HEADERS)
    if extra:
        raise SignatureError(f"token header parameter {extra[0][:20]!r} is not allowed")
    if header.get("alg") != JWT_ALGORITHM:
        raise SignatureError("token algorithm is not allowed")


def _decode_jwt(
    text: str, key: ec.EllipticCurvePublicKey, *, audience: str | None, issuer: str | None
) -> dict[str, Any] | None:
    """The claims if ``key`` signed the token; None if its signature does not verify with ``key``."""
    required = ["jti", *(["aud"] if audience is not None else []), *(["iss"] if issuer is not None else [])]
    try:
        claims: dict[str, Any] = jwt.decode(
            text,
            key,
            algorithms=[JWT_ALGORITHM],  # fixed: never read from the token
            audience=audience,
            issuer=issuer,
            options={
                "verify_signature": True,
                "require": required,
                "verify_aud": True,
                "strict_aud": audience is not None,
                "verify_iss": True,
                "verify_jti": True,
                "verify_sub": True,
                # Checked in _check_times against `now`: PyJWT would read the wall clock.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidSignatureError:
        return None
    except jwt.MissingRequiredClaimError as exc:
        raise SignatureError(f"token has no {exc.claim} claim") from None
    except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
        raise SignatureError("token audience or issuer is wrong") from None
    except jwt.DecodeError:
        raise RequestError("token is malformed") from None
    except jwt.PyJWTError:
        raise SignatureError("token is invalid") from None
    return claims
