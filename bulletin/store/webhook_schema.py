"""The outbound-webhook tables and their row models: endpoints, messages, attempts. Pure: no I/O here.

The tables live in the ledger's ``MetaData``, so the one Alembic history (and its autogenerate) sees every table;
``migrations/versions/0002_webhooks.py`` is their frozen copy. Secrets are kept as ``SecretStr`` in the row models:
never shown by repr, logs or JSON dumps.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets as secrets_module
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from bulletin.errors import ConfigError
from bulletin.store.base import UTCDateTime, aware, metadata

#: Event types an endpoint may subscribe to; ``*`` means all of them. ``ping`` and ``endpoint.disabled`` are not
#: subscribed to: they are addressed to endpoints (the one tested; every other enabled one).
EVENT_TYPES = ("report.delivered", "report.failed", "run.completed")
ALL_EVENTS = "*"
STYLES = ("standard", "dbt")
URL_MAX = 2048
DESCRIPTION_MAX = 500
RESPONSE_BODY_MAX = 4096
ERROR_MAX = 2000
PAYLOAD_MAX = 256 * 1024
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
#: The Standard Webhooks bounds on a secret's decoded length.
SECRET_BYTES_MIN, SECRET_BYTES_MAX = 24, 64
LEASE_SECONDS_MAX = 3600

Style = Literal["standard", "dbt"]
Outcome = Literal["success", "retry", "gone", "failed"]


class MessageStatus(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"


webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("url", Text, nullable=False),
    Column("event_types", JSON, nullable=False),
    Column("secret", Text, nullable=False),
    Column("previous_secret", Text),
    Column("previous_secret_expires_at", UTCDateTime()),
    Column("style", String(16), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", Text),
    Column("description", Text, nullable=False),
    Column("org", String(128)),
    Column("failing_since", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    CheckConstraint("style IN ('standard', 'dbt')", name="ck_webhook_endpoints_style"),
    Index("ix_webhook_endpoints_org", "org"),
)

webhook_messages = Table(
    "webhook_messages",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("endpoint_id", String(40), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime()),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("claimed_by", String(40)),
    Column("lease_expires_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("delivered_at", UTCDateTime()),
    CheckConstraint("status IN ('pending', 'delivering', 'delivered', 'failed')", name="ck_webhook_messages_status"),
    Index("ix_webhook_messages_status_next", "status", "next_attempt_at"),
    Index("ix_webhook_messages_endpoint", "endpoint_id", "created_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("message_id", String(40), ForeignKey("webhook_messages.id", ondelete="CASCADE"), nullable=False),
    Column("endpoint_id", String(40), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False),
    Column("attempted_at", UTCDateTime(), nullable=False),
    Column("status_code", Integer),
    Column("duration_ms", Integer, nullable=False),
    Column("response_body", Text),
    Column("error", Text),
    Column("outcome", String(16), nullable=False),
    CheckConstraint("outcome IN ('success', 'retry', 'gone', 'failed')", name="ck_webhook_attempts_outcome"),
    Index("ix_webhook_attempts_message", "message_id", "attempted_at"),
    Index("ix_webhook_attempts_endpoint", "endpoint_id", "attempted_at"),
)


class Endpoint(BaseModel):
    """A subscriber. ``secret`` and ``previous_secret`` are SecretStr: never shown by repr, logs or JSON dumps."""

    model_config = ConfigDict(frozen=True)

    id: str
    url: str
    event_types: tuple[str, ...]
    secret: SecretStr
    previous_secret: SecretStr | None
    previous_secret_expires_at: datetime | None
    style: Style
    enabled: bool
    disabled_reason: str | None
    description: str
    org: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime

    def subscribes_to(self, event_type: str) -> bool:
        return ALL_EVENTS in self.event_types or event_type in self.event_types

    def hears(self, event_type: str, org: str | None) -> bool:
        """Whether a subscribed event of ``event_type`` about ``org``'s recipients (None: a run's totals) goes here."""
        return self.subscribes_to(event_type) and self.hears_from(org)

    def hears_from(self, org: str | None) -> bool:
        """An org-less endpoint (added by an operator) hears every event; an organisation's endpoint only events
        about its own recipients: never another organisation's, nor a run's totals across organisations."""
        return self.org is None or (org is not None and self.org == org)


class Message(BaseModel):
    """One event for one endpoint. ``payload`` is the exact body sent (ASCII JSON), ``id`` its webhook-id."""

    model_config = ConfigDict(frozen=True)

    id: str
    endpoint_id: str
    event_type: str
    payload: str
    status: MessageStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    claimed_by: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None

    @property
    def body(self) -> bytes:
        return self.payload.encode("utf-8")


class Attempt(BaseModel):
    """One HTTP attempt (or a refusal before connecting) as logged."""

    model_config = ConfigDict(frozen=True)

    id: int
    message_id: str
    endpoint_id: str
    attempted_at: datetime
    status_code: int | None
    duration_ms: int
    response_body: str | None
    error: str | None
    outcome: Outcome


class MessageClaim(BaseModel):
    """The right to make one attempt at ``message`` (to ``endpoint``), held until ``record_attempt``."""

    model_config = ConfigDict(frozen=True)

    message: Message
    endpoint: Endpoint
    token: str

    @property
    def attempt_number(self) -> int:
        """0 for the first attempt of the message's current round (``redeliver`` starts a new round)."""
        return self.message.attempts


class RecordedAttempt(BaseModel):
    """What ``record_attempt`` left behind. ``applied`` is False when the claim had been taken over meanwhile."""

    model_config = ConfigDict(frozen=True)

    attempt: Attempt
    message: Message
    endpoint: Endpoint
    applied: bool


# --- checks and the body -------------------------------------------------------------------------------------------


def generate_secret() -> str:
    """A fresh ``whsec_`` secret of 32 random bytes (the Standard Webhooks format)."""
    return SECRET_PREFIX + base64.b64encode(secrets_module.token_bytes(32)).decode("ascii")


def check_secret(secret: str) -> str:
    """``secret`` if it is ``whsec_`` + base64 of 24-64 bytes, else ConfigError (which never quotes the secret).

    The same rule as ``tasks.webhooks.signing.secret_bytes`` (the core cannot import tasks), plus the prefix, which
    is required here so a secret on the command line is recognisable as one. Unpadded base64 (as Svix generates it)
    is accepted.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ConfigError("a webhook secret must start with whsec_", field="secret")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("a webhook secret must be whsec_ followed by base64", field="secret") from None
    if not SECRET_BYTES_MIN <= len(raw) <= SECRET_BYTES_MAX:
        raise ConfigError(
            f"a webhook secret must hold {SECRET_BYTES_MIN}-{SECRET_BYTES_MAX} bytes, not {len(raw)}", field="secret"
        )
    return secret


def check_url(url: str) -> str:
    """Syntax only (http or https, a host, no credentials): the SSRF check runs at every send, as DNS may change."""
    if not url or len(url) > URL_MAX or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ConfigError(f"a webhook URL must be 1-{URL_MAX} characters without spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check: "host:99999" raises here
    except ValueError as error:
        raise ConfigError(f"invalid webhook URL: {error}", field="url") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError("a webhook URL must be http:// or https:// with a host", field="url")
    if parts.username is not None or parts.password is not None:
        # They would be printed by `webhooks list` and sent in clear to whoever the host is: use the signature.
        raise ConfigError("a webhook URL must not carry credentials (user:password@)", field="url")
    return url


def event_body(event_type: str, data: dict[str, Any], *, now: datetime) -> str:
    """The canonical body ``{"type", "timestamp", "data"}``: sorted keys, no spaces, ASCII (text == bytes)."""
    timestamp = aware(now).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    try:
        body = json.dumps(
            {"type": event_type, "timestamp": timestamp, "data": data},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"the {event_type} payload is not JSON: {error}") from None
    if len(body) > PAYLOAD_MAX:
        raise ConfigError(f"the {event_type} payload is {len(body)} bytes, over {PAYLOAD_MAX}: links, not data")
    return body


def check_event_types(event_types: Sequence[str]) -> list[str]:
    types = list(dict.fromkeys(event_types))
    if not types:
        raise ConfigError("an endpoint needs at least one event type", field="event_types")
    unknown = [t for t in types if t != ALL_EVENTS and t not in EVENT_TYPES]
    if unknown:
        raise ConfigError(
            f"unknown event type {unknown[0][:64]!r}: one of {', '.join(EVENT_TYPES)} or {ALL_EVENTS}",
            field="event_types",
        )
    return types
