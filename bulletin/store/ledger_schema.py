"""The delivery ledger's table and row models: one row per (run key, recipient, format, channel). Pure: no I/O here.

The table lives in the store's shared ``MetaData``, so the one Alembic history sees it;
``migrations/versions/0001_deliveries.py`` is its frozen copy. ``bulletin.store.ledger`` claims and finishes rows,
``bulletin.store.ledger_queries`` reads them.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from bulletin.models import FilterGroups
from bulletin.store.base import UTCDateTime, metadata

RUN_KEY_MAX = 200
RUN_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]*$")
LEASE_SECONDS_MAX = 24 * 3600
ERROR_MAX = 2000
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class LedgerStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class ClaimOutcome(StrEnum):
    #: This caller must send now, then call ``mark_sent`` or ``mark_failed``.
    CLAIMED = "CLAIMED"
    #: Sent earlier: send nothing. ``row`` carries the sha256 and uri of that send.
    ALREADY_SENT = "ALREADY_SENT"
    ALREADY_SKIPPED = "ALREADY_SKIPPED"
    #: Another claim holds a live lease: send nothing now; a later run retries if that claim fails or lapses.
    IN_PROGRESS = "IN_PROGRESS"


deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("run_key", String(RUN_KEY_MAX), nullable=False),
    Column("report_id", String(128), nullable=False),
    Column("run_id", String(128), nullable=False),
    Column("recipient", String(128), nullable=False),
    Column("format", String(32), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("sha256", String(64)),
    Column("uri", Text),
    Column("bytes", BigInteger),
    Column("rows", BigInteger),
    Column("token_jti", String(128)),
    Column("secure_filters", JSON),
    Column("claimed_by", String(128)),
    Column("lease_expires_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime()),
    UniqueConstraint("run_key", "recipient", "format", "channel", name="uq_deliveries_delivery"),
    CheckConstraint("status IN ('pending', 'sent', 'failed', 'skipped')", name="ck_deliveries_status"),
    Index("ix_deliveries_report_id", "report_id"),
    Index("ix_deliveries_recipient_sent_at", "recipient", "sent_at"),
    Index("ix_deliveries_status", "status"),
)


class LedgerRow(BaseModel):
    """One delivery as recorded. ``secure_filters`` is the data scope applied (dataset -> OR of AND groups)."""

    model_config = ConfigDict(frozen=True)

    id: int
    run_key: str
    report_id: str
    run_id: str
    recipient: str
    format: str
    channel: str
    status: LedgerStatus
    attempts: int
    last_error: str | None
    sha256: str | None
    uri: str | None
    bytes: int | None
    rows: int | None
    token_jti: str | None
    secure_filters: dict[str, FilterGroups] | None
    claimed_by: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


class ClaimResult(BaseModel):
    """What ``claim`` decided, and the row as it stands after the decision."""

    model_config = ConfigDict(frozen=True)

    outcome: ClaimOutcome
    row: LedgerRow

    @property
    def claimed(self) -> bool:
        return self.outcome is ClaimOutcome.CLAIMED


#: The reason on a skipped ledger row whose person turned that channel off themselves (their own preference level,
#: or an unsubscribe link): shown in the manifest and the audit.
UNSUBSCRIBED = "unsubscribed"


class AuditEntry(BaseModel):
    """Which data scope went to a recipient, when, and as which file."""

    model_config = ConfigDict(frozen=True)

    when: datetime
    report_id: str
    run_key: str
    format: str
    channel: str
    status: LedgerStatus
    uri: str | None
    sha256: str | None
    bytes: int | None
    rows: int | None
    token_jti: str | None
    secure_filters: dict[str, FilterGroups]
    #: Why nothing was sent (a skipped entry: ``unsubscribed``); None for a file that was sent.
    reason: str | None = None
