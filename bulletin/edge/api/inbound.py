"""Verifying an inbound request and reading its body: signature first, then the payload.

``verify_request`` is pure: it takes the secrets, the raw headers, the raw body and the clock, and returns the
message id (for the replay store) and the payload. The signature primitives are tasks.webhooks.signing's; this
module only picks the right one per scheme, finds the message id, and turns any malformed input into a 400/401.
``load_secrets`` is the one I/O step: an environment variable or a Prefect Secret block, read per request so a
rotated secret takes effect without a restart.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bulletin.errors import (
    BulletinError,
    ConfigError,
    RequestError,
    SignatureError,
    TriggerNotConfiguredError,
)
from bulletin.triggers import Trigger, Verification, missing_secret_env
from tasks.secrets import read_secret_block
from tasks.webhooks import signing

logger = logging.getLogger(__name__)

#: The headers each scheme reads; each must appear at most once (two signatures headers would be ambiguous).
SCHEME_HEADERS: dict[str, tuple[str, ...]] = {
    "standard-webhooks": (
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "svix-id",
        "svix-timestamp",
        "svix-signature",
    ),
    "dbt-cloud": ("authorization",),
    "github": ("x-hub-signature-256", "x-github-delivery"),
    "jwt-es256": (),
}
_MESSAGE_ID = re.compile(r"^[\x21-\x7e]{1,256}$")
_PEM = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)
_MAX_DEPTH = 64


@dataclass(frozen=True)
class Inbound:
    """A verified request: its message id (unique per sender) and its JSON payload (JWT claims for jwt-es256)."""

    message_id: str
    payload: dict[str, Any]


# --- secrets ------------------------------------------------------------------------------------------------------


def load_secrets(trigger: Trigger, environ: Mapping[str, str] | None = None) -> list[str]:
    """The trigger's secrets (several while one rotates) or public keys. A missing one is a
    TriggerNotConfiguredError (503) whose message names the trigger only: the caller is unauthenticated, the
    variable's or block's name is for the server log."""
    verify = trigger.verify
    env = os.environ if environ is None else environ
    missing = missing_secret_env(trigger, env)
    if missing is not None:
        logger.error("trigger %r: environment variable %s is not set", trigger.id, missing)
        raise TriggerNotConfiguredError(f"trigger {trigger.id!r} has no secret configured")
    env_name = verify.secret_env or verify.public_key_env
    if env_name is not None:
        return split_secrets(verify, env[env_name])
    block = verify.secret_block or verify.public_key_block or ""
    try:
        value = read_secret_block(block)
    except ConfigError as exc:
        logger.error("trigger %r: %s", trigger.id, exc)
        raise TriggerNotConfiguredError(f"trigger {trigger.id!r} has no secret configured") from exc
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    if isinstance(value, str) and value.strip():
        return split_secrets(verify, value)
    logger.error("trigger %r: Secret block %r holds neither a string nor a list of strings", trigger.id, block)
    raise TriggerNotConfiguredError(f"trigger {trigger.id!r} has no usable secret")


def split_secrets(verify: Verification, raw: str) -> list[str]:
    """Several Standard Webhooks secrets are space-separated (``whsec_`` + base64 has no spaces); several PEM keys
    are concatenated. A GitHub or dbt secret may itself contain spaces, so it is taken whole."""
    if verify.scheme == "standard-webhooks":
        return raw.split()
    if verify.scheme == "jwt-es256":
        return _PEM.findall(raw) or [raw.strip()]
    return [raw]


# --- verification ---------------------------------------------------------------------------------------------------


def fold_headers(pairs: Iterable[tuple[str, str]], unique: Iterable[str]) -> dict[str, str]:
    """Headers by lower-case name; a header in ``unique`` sent twice is refused rather than one copy picked."""
    folded: dict[str, str] = {}
    must_be_single = set(unique)
    for name, value in pairs:
        key = name.lower()
        if key in folded and key in must_be_single:
            raise RequestError(f"header {key!r} appears more than once", field=key)
        folded.setdefault(key, value)
    return folded


def verify_request(
    trigger: Trigger, secrets: list[str], headers: Mapping[str, str], body: bytes, *, now: datetime
) -> Inbound:
    """Check the request against the trigger's scheme before anything reads the body, then parse it.

    ``headers`` must have lower-case names (``fold_headers``). SignatureError (401): missing or wrong signature,
    stale or future timestamp. RequestError (400): a malformed header, message id or body.
    """
    verify = trigger.verify
    try:
        if verify.scheme == "standard-webhooks":
            message_id = signing.verify_standard(
                secrets, headers, body, now=now, tolerance_seconds=verify.tolerance_seconds
            )
            return Inbound(_check_message_id(message_id, "webhook-id"), parse_payload(body))
        if verify.scheme == "dbt-cloud":
            _first_that_verifies(secrets, lambda s: signing.verify_dbt(s, headers.get("authorization"), body))
            payload = parse_payload(body)
            _check_body_timestamp(payload, now, max_age=verify.max_age, tolerance=verify.tolerance_seconds)
            return Inbound(_check_message_id(payload.get("eventId"), "eventId"), payload)
        if verify.scheme == "github":
            _first_that_verifies(secrets, lambda s: signing.verify_github(s, headers.get("x-hub-signature-256"), body))
            delivery = _check_message_id(headers.get("x-github-delivery"), "x-github-delivery")
            return Inbound(delivery, parse_payload(body))
        claims = signing.verify_jwt_es256(
            secrets,
            body,
            now=now,
            audience=verify.audience,
            issuer=verify.issuer,
            max_age_seconds=verify.max_age,
        )
        return Inbound(_check_message_id(claims.get("jti"), "jti"), dict(claims))
    except BulletinError:
        raise
    except (ValueError, TypeError, UnicodeError) as exc:
        # The edge of untrusted input: whatever a verifier chokes on is the sender's malformed request, not a 500.
        raise RequestError(f"malformed {verify.scheme} request", field="headers") from exc


def _first_that_verifies(secrets: list[str], check: Any) -> None:
    """Accept a signature made with any configured secret (rotation); a malformed header fails at once."""
    error: SignatureError | None = None
    for secret in secrets:
        try:
            check(secret)
            return
        except SignatureError as exc:
            error = exc
    raise error or SignatureError("no secret to verify with")


def _check_message_id(value: object, name: str) -> str:
    if value is None or value == "":
        raise RequestError(f"{name} is missing", field=name)
    if not isinstance(value, str) or not _MESSAGE_ID.match(value):
        raise RequestError(f"{name} must be 1-256 printable ASCII characters", field=name)
    return value


def _check_body_timestamp(payload: dict[str, Any], now: datetime, *, max_age: int, tolerance: int) -> None:
    """dbt Cloud signs no timestamp header, so the signed body's ``timestamp`` bounds how old a replay can be."""
    raw = payload.get("timestamp")
    if not isinstance(raw, str):
        raise RequestError("the body has no 'timestamp'", field="timestamp")
    try:
        when = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise RequestError("the body's 'timestamp' is not an ISO 8601 time", field="timestamp") from exc
    if when.tzinfo is None:
        raise RequestError("the body's 'timestamp' has no time zone", field="timestamp")
    age = (now - when).total_seconds()
    if age > max_age:
        raise SignatureError(f"the message is stale: its timestamp is more than {max_age} s old", field="timestamp")
    if age < -tolerance:
        raise SignatureError("the message's timestamp is in the future", field="timestamp")


# --- the body ---------------------------------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise RequestError(f"the body is not valid JSON: {name} is not a JSON number", field="body")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one key read differently by different parsers: refuse rather than pick one.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise RequestError("the body's JSON has a duplicate key", field="body")
    return result


def _depth(value: Any) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def parse_payload(body: bytes) -> dict[str, Any]:
    """The body as a JSON object: strict UTF-8, no duplicate keys, no NaN, at most 64 levels deep (RequestError)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError("the body is not UTF-8", field="body") from exc
    try:
        payload = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise RequestError(f"the body is not valid JSON (line {exc.lineno}, column {exc.colno})", field="body") from exc
    except RecursionError as exc:
        raise RequestError("the body's JSON is nested too deeply", field="body") from exc
    if not isinstance(payload, dict):
        raise RequestError("the body must be a JSON object", field="body")
    if _depth(payload) > _MAX_DEPTH:
        raise RequestError("the body's JSON is nested too deeply", field="body")
    return payload
