"""One-off scheduled webhook events (Hasura-style): tables, row models and the pure rules. No I/O here.

An event is a webhook URL, a time (``schedule_at``, UTC), a JSON payload, extra headers and a ``retry_conf``
with Hasura's fields and defaults. Its ``body`` is built once, at creation (``event_body``: Hasura's envelope
``{"id", "scheduled_time", "payload", "comment"}``), so every attempt sends and signs the same bytes.

Header values may be secrets (an ``Authorization`` for the receiver): rows hold them as ``SecretStr``, responses
show them masked, invocation logs never contain them. The tables live in the ledger's ``MetaData``;
``migrations/versions/0004_scheduled_events.py`` is their frozen copy.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from bulletin.errors import RequestError
from bulletin.store.base import UTCDateTime, aware, metadata

EVENT_ID_PREFIX = "se_"
#: The serialized payload (and so the body) stays small: a scheduled event is a nudge, not a data transfer.
PAYLOAD_MAX_BYTES = 64 * 1024
COMMENT_MAX = 1_000
HEADERS_MAX = 20
HEADER_NAME_MAX = 64
HEADER_VALUE_MAX = 4_096
RESPONSE_BODY_MAX = 4_096
ERROR_MAX = 2_000
#: What a masked header value looks like in answers and invocation logs (the same whatever the value's length).
MASK = "********"
#: Signature headers we add; a caller may not set them, nor what the HTTP client itself owns.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "user-agent",
    }
)
#: Sent headers whose values carry nothing secret, shown as sent in invocation logs; every other value is masked.
PUBLIC_LOGGED_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "content-type", "user-agent"})

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")


class EventStatus(StrEnum):
    SCHEDULED = "scheduled"
    DELIVERED = "delivered"
    ERROR = "error"
    DEAD = "dead"
    CANCELLED = "cancelled"


PROCESSED = (EventStatus.DELIVERED, EventStatus.ERROR, EventStatus.DEAD)

scheduled_events = Table(
    "scheduled_events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org", String(128), nullable=False),
    Column("webhook", Text, nullable=False),
    Column("schedule_at", UTCDateTime(), nullable=False),
    Column("body", Text, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("num_retries", Integer, nullable=False),
    Column("retry_interval_seconds", Integer, nullable=False),
    Column("timeout_seconds", Integer, nullable=False),
    Column("tolerance_seconds", Integer, nullable=False),
    Column("comment", Text),
    Column("status", String(16), nullable=False),
    Column("tries", Integer, nullable=False),
    Column("due_at", UTCDateTime(), nullable=False),
    Column("next_retry_at", UTCDateTime()),
    Column("last_error", Text),
    Column("claimed_by", String(40)),
    Column("lease_expires_at", UTCDateTime()),
    Column("flow_run_id", String(40)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("processed_at", UTCDateTime()),
    CheckConstraint(
        "status IN ('scheduled', 'delivered', 'error', 'dead', 'cancelled')", name="ck_scheduled_events_status"
    ),
    Index("ix_scheduled_events_status_due", "status", "due_at"),
    Index("ix_scheduled_events_org_created", "org", "created_at", "id"),
)

scheduled_event_invocations = Table(
    "scheduled_event_invocations",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", String(40), ForeignKey("scheduled_events.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("attempted_at", UTCDateTime(), nullable=False),
    Column("request_headers", JSON, nullable=False),
    Column("status_code", Integer),
    Column("response_body", Text),
    Column("duration_ms", Integer, nullable=False),
    Column("error", Text),
    Index("ix_scheduled_event_invocations_event", "event_id", "id"),
)

scheduled_event_secrets = Table(
    "scheduled_event_secrets",
    metadata,
    Column("org", String(128), primary_key=True),
    Column("secret", Text, nullable=False),
    Column("previous_secret", Text),
    Column("previous_secret_expires_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)


# --- the request's parts, checked -----------------------------------------------------------------------------------


class RetryConf(BaseModel):
    """Hasura's ``retry_conf`` with Hasura's defaults. ``num_retries`` retries follow a failed first attempt, each
    ``retry_interval_seconds`` after the previous one; the request timeout is ``timeout_seconds`` but never more
    than 30 s (our rule for every webhook out); an event not started within ``tolerance_seconds`` of its time is
    dead."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_retries: int = Field(default=0, ge=0, le=100, description="Retries after a failed first attempt.")
    retry_interval_seconds: int = Field(default=10, ge=1, le=86_400, description="Seconds between attempts.")
    timeout_seconds: int = Field(
        default=60, ge=1, le=3_600, description="Request timeout in seconds; at most 30 s is used."
    )
    tolerance_seconds: int = Field(
        default=21_600,
        ge=1,
        le=30 * 86_400,
        description="An event not started within this many seconds of schedule_at is dead and is not sent.",
    )


class HeaderIn(BaseModel):
    """One extra request header. Its value may be a secret: stored to be sent, never shown or logged."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=HEADER_NAME_MAX, description="An HTTP header name.")
    value: str = Field(max_length=HEADER_VALUE_MAX, description="Its value: printable ASCII, no CR or LF.")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _TOKEN.fullmatch(name):
            raise ValueError("a header name is letters, digits and !#$%&'*+.^_`|~- only (no spaces, CR or LF)")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by Bulletin and cannot be given")
        return name

    @field_validator("value")
    @classmethod
    def _value(cls, value: str) -> str:
        if not _VALUE.fullmatch(value):
            raise ValueError("a header value is printable ASCII or tabs only (no CR, LF or other control characters)")
        return value


def check_headers(headers: list[HeaderIn]) -> list[HeaderIn]:
    if len(headers) > HEADERS_MAX:
        raise RequestError(f"at most {HEADERS_MAX} headers", field="headers")
    seen: set[str] = set()
    for index, header in enumerate(headers):
        if header.name.lower() in seen:
            raise RequestError(f"header {header.name!r} is given twice", field=f"headers.{index}.name")
        seen.add(header.name.lower())
    return headers


def event_body(event_id: str, schedule_at: datetime, payload: Any, comment: str | None) -> str:
    """The exact body of every attempt: Hasura's scheduled-event envelope, compact sorted ASCII JSON."""
    try:
        body = json.dumps(
            {"id": event_id, "scheduled_time": iso(schedule_at), "payload": payload, "comment": comment},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
        )
    except (TypeError, ValueError) as error:
        raise RequestError(f"payload is not JSON: {error}", field="payload") from None
    if len(body) > PAYLOAD_MAX_BYTES:
        raise RequestError(f"payload is too large: the body would be over {PAYLOAD_MAX_BYTES} bytes", field="payload")
    return body


def iso(value: datetime) -> str:
    return aware(value).isoformat().replace("+00:00", "Z")


# --- rows -----------------------------------------------------------------------------------------------------------


class Header(BaseModel):
    """A stored header: the value is a SecretStr (never in repr, logs or JSON dumps)."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: SecretStr


class ScheduledEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    org: str
    webhook: str
    schedule_at: datetime
    body: str
    headers: tuple[Header, ...]
    num_retries: int
    retry_interval_seconds: int
    timeout_seconds: int
    tolerance_seconds: int
    comment: str | None
    status: EventStatus
    tries: int
    due_at: datetime
    next_retry_at: datetime | None
    last_error: str | None
    claimed_by: str | None
    lease_expires_at: datetime | None
    flow_run_id: str | None
    created_at: datetime
    updated_at: datetime
    processed_at: datetime | None

    @property
    def retry_conf(self) -> RetryConf:
        return RetryConf(
            num_retries=self.num_retries,
            retry_interval_seconds=self.retry_interval_seconds,
            timeout_seconds=self.timeout_seconds,
            tolerance_seconds=self.tolerance_seconds,
        )

    @property
    def payload(self) -> Any:
        return json.loads(self.body)["payload"]

    def is_dead(self, now: datetime) -> bool:
        """Not started within ``tolerance_seconds`` of its time (first attempts only: a retry may come later)."""
        return self.tries == 0 and aware(now) > self.schedule_at + timedelta(seconds=self.tolerance_seconds)


class Invocation(BaseModel):
    """One attempt as logged: the request headers with every secret masked, the first 4 KB of the answer."""

    model_config = ConfigDict(frozen=True)

    id: int
    event_id: str
    attempt: int
    attempted_at: datetime
    request_headers: list[dict[str, str]]
    status_code: int | None
    response_body: str | None
    duration_ms: int
    error: str | None


class EventClaim(BaseModel):
    """The right to make one attempt at ``event``, held until ``record_invocation`` (or the lease runs out).

    A claim whose ``event.status`` is ``dead`` holds nothing: the event was found past its tolerance and closed.
    """

    model_config = ConfigDict(frozen=True)

    event: ScheduledEvent
    token: str

    @property
    def dead(self) -> bool:
        return self.event.status is EventStatus.DEAD


class OrgSecret(BaseModel):
    """An organisation's signing secret for scheduled events (SecretStr: never shown by repr, logs or dumps)."""

    model_config = ConfigDict(frozen=True)

    org: str
    secret: SecretStr
    previous_secret: SecretStr | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    def signing_secrets(self, now: datetime) -> list[str]:
        """The current secret, and the previous one while its grace lasts (two signatures while rotating)."""
        found = [self.secret.get_secret_value()]
        expires = self.previous_secret_expires_at
        if self.previous_secret is not None and expires is not None and aware(now) < expires:
            found.append(self.previous_secret.get_secret_value())
        return found


def logged_headers(sent: dict[str, str]) -> list[dict[str, str]]:
    """The request headers as an invocation log keeps them: every value masked but the few that are not secret."""
    return [
        {"name": name, "value": value if name.lower() in PUBLIC_LOGGED_HEADERS else MASK}
        for name, value in sent.items()
    ]
