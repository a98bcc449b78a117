"""The delivery ledger: one row per (run key, recipient, format, channel), so each delivery is sent once.

Prefect's task caching is at-least-once; this table is the real guarantee. A sender first *claims* its row. The
claim is an insert that does nothing on conflict, then a compare-and-set UPDATE that only matches a failed row or a
pending row whose lease has expired (a crashed run). Both statements are atomic on SQLite (inside BEGIN IMMEDIATE)
and on PostgreSQL (the unique index and row locks, re-checked under READ COMMITTED), so of N concurrent claimers
exactly one is told to send. Finishing a row is guarded by ``claimed_by`` and ``attempts``, so a claimer whose lease
was taken over cannot overwrite the newer claim's outcome.

Every function takes the clock (``now``) as an argument.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    ColumnElement,
    Connection,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    Update,
    and_,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from bulletin.errors import ConfigError, StorageError
from bulletin.models import IDENTIFIER_RE, FilterGroups
from bulletin.store.base import UTCDateTime, aware, metadata
from bulletin.store.db import Store

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

_FILTERS = TypeAdapter(dict[str, FilterGroups])


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


# --- run keys ---------------------------------------------------------------------------------------------------


def scheduled_run_key(report_id: str, slot: datetime, parameters: Mapping[str, Any] | None = None) -> str:
    """The key of a scheduled run: its report and slot in UTC to the second, e.g. ``sales@2026-11-02T07:00:00Z``.

    A schedule with its own parameters adds their digest (``...Z+1a2b3c4d5e``): two schedules of one report due at
    the same minute with different parameters are two runs, each sent once, not one run sent once.
    """
    _check_identifier(report_id, "report_id")
    key = f"{report_id}@{aware(slot, 'slot', field='slot').strftime('%Y-%m-%dT%H:%M:%SZ')}"
    if parameters:
        canonical = json.dumps(parameters, sort_keys=True, separators=(",", ":"), default=str)
        key += "+" + hashlib.sha256(canonical.encode()).hexdigest()[:10]
    return check_run_key(key)


def adhoc_run_key() -> str:
    """A fresh key for an ad-hoc run, so it never collides with another run."""
    return f"adhoc-{uuid.uuid4().hex}"


def check_run_key(text: str) -> str:
    """Return ``text`` if it is a usable run key (as given to ``bulletin run --run-key``), else raise ConfigError."""
    if len(text) > RUN_KEY_MAX or not RUN_KEY_RE.fullmatch(text):
        raise ConfigError(
            f"run key {text[:RUN_KEY_MAX]!r} must be 1-{RUN_KEY_MAX} characters: letters, digits and _ . : @ + -, "
            "starting with a letter or digit",
            field="run_key",
        )
    return text


# --- claiming and finishing ---------------------------------------------------------------------------------------


def claim(
    store: Store,
    *,
    run_key: str,
    report_id: str,
    run_id: str,
    recipient: str,
    format: str,
    channel: str,
    lease_seconds: float,
    now: datetime,
) -> ClaimResult:
    """Decide whether this caller sends this delivery. Exactly one of several concurrent callers gets CLAIMED.

    ``lease_seconds`` must outlast the send: once it runs out, another run may claim the row and send again.
    """
    key = _Key.build(run_key=run_key, recipient=recipient, format=format, channel=channel)
    _check_identifier(report_id, "report_id")
    _check_run_id(run_id)
    if not 0 < lease_seconds <= LEASE_SECONDS_MAX:
        raise ConfigError(f"lease_seconds must be in (0, {LEASE_SECONDS_MAX}]", field="lease_seconds")
    now = aware(now, "now", field="now")
    lease = now + timedelta(seconds=lease_seconds)
    with store.write() as conn:
        new_row = {
            **key.values(),
            "report_id": report_id,
            "run_id": run_id,
            "status": LedgerStatus.PENDING.value,
            "attempts": 1,
            "claimed_by": run_id,
            "lease_expires_at": lease,
            "created_at": now,
            "updated_at": now,
        }
        inserted = _insert_if_absent(conn, new_row, key)
        if inserted is not None:
            return ClaimResult(outcome=ClaimOutcome.CLAIMED, row=inserted)
        reclaim = (
            update(deliveries)
            .where(key.where(), _reclaimable(now))
            .values(
                status=LedgerStatus.PENDING.value,
                attempts=deliveries.c.attempts + 1,
                run_id=run_id,
                claimed_by=run_id,
                lease_expires_at=lease,
                updated_at=now,
            )
        )
        reclaimed = _update_one(conn, reclaim, key)
        if reclaimed is not None:
            return ClaimResult(outcome=ClaimOutcome.CLAIMED, row=reclaimed)
        row = _fetch(conn, key)
    outcome = {
        LedgerStatus.SENT: ClaimOutcome.ALREADY_SENT,
        LedgerStatus.SKIPPED: ClaimOutcome.ALREADY_SKIPPED,
    }.get(row.status, ClaimOutcome.IN_PROGRESS)
    return ClaimResult(outcome=outcome, row=row)


def mark_sent(
    store: Store,
    claim: ClaimResult,
    *,
    sha256: str,
    uri: str,
    bytes: int,
    rows: int,
    token_jti: str | None,
    secure_filters: Mapping[str, FilterGroups],
    now: datetime,
) -> LedgerRow:
    """Record a successful send by the holder of ``claim``: its file, its token's jti and the data scope applied."""
    if not SHA256_RE.fullmatch(sha256):
        raise ConfigError("sha256 must be 64 lowercase hex digits", field="sha256")
    if bytes < 0 or rows < 0:
        raise ConfigError("bytes and rows cannot be negative")
    try:
        # Validated as filters, so a token (or anything else) cannot be stored as "scope" by mistake.
        scope = _FILTERS.dump_python(_FILTERS.validate_python(dict(secure_filters)), mode="json")
    except ValidationError:
        # Not chained: pydantic's message quotes the rejected input, which may be the very secret kept out here.
        raise ConfigError("secure_filters must map dataset names to filter groups", field="secure_filters") from None
    return _finish(
        store,
        claim,
        now=aware(now, "now", field="now"),
        status=LedgerStatus.SENT,
        sha256=sha256,
        uri=uri,
        bytes=bytes,
        rows=rows,
        token_jti=token_jti,
        secure_filters=scope,
        last_error=None,
        sent_at=aware(now, "now", field="now"),
    )


def mark_failed(store: Store, claim: ClaimResult, *, error: str, now: datetime) -> LedgerRow:
    """Record a failed send by the holder of ``claim``; a later claim retries it. Keep secrets out of ``error``."""
    return _finish(
        store, claim, now=aware(now, "now", field="now"), status=LedgerStatus.FAILED, last_error=error[:ERROR_MAX]
    )


def mark_skipped(
    store: Store,
    *,
    run_key: str,
    report_id: str,
    run_id: str,
    recipient: str,
    format: str,
    channel: str,
    reason: str,
    now: datetime,
    claim: ClaimResult | None = None,
    sha256: str | None = None,
) -> LedgerRow:
    """Record that nothing was sent (empty data, unchanged file), with ``reason`` in ``last_error``. Idempotent.

    A sent or skipped row is left as it is, and so is a pending row under another live claim (the returned row's
    status says which). Pass ``claim`` to skip a row you claimed yourself, and ``sha256`` of the unchanged file.
    """
    key = _Key.build(run_key=run_key, recipient=recipient, format=format, channel=channel)
    _check_identifier(report_id, "report_id")
    _check_run_id(run_id)
    if sha256 is not None and not SHA256_RE.fullmatch(sha256):
        raise ConfigError("sha256 must be 64 lowercase hex digits", field="sha256")
    if claim is not None and not claim.claimed:
        raise StorageError(f"cannot skip through a claim that was not granted ({claim.outcome.value})")
    if claim is not None and _Key.from_row(claim.row) != key:
        raise ConfigError(f"the claim given is for {_Key.from_row(claim.row)}, not {key}")
    now = aware(now, "now", field="now")
    outcome = {
        "status": LedgerStatus.SKIPPED.value,
        "last_error": reason[:ERROR_MAX],
        "sha256": sha256,
        "run_id": run_id,
        "lease_expires_at": None,
        "updated_at": now,
    }
    new_row = {**key.values(), **outcome, "report_id": report_id, "attempts": 0, "created_at": now}
    with store.write() as conn:
        inserted = _insert_if_absent(conn, new_row, key)
        if inserted is not None:
            return inserted
        allowed = _reclaimable(now) if claim is None else or_(_reclaimable(now), _held_by(claim))
        conn.execute(update(deliveries).where(key.where(), allowed).values(**outcome))
        return _fetch(conn, key)


def _finish(store: Store, claim: ClaimResult, *, now: datetime, status: LedgerStatus, **values: Any) -> LedgerRow:
    if not claim.claimed:
        raise StorageError(f"cannot finish a delivery that was not claimed ({claim.outcome.value})")
    key = _Key.from_row(claim.row)
    with store.write() as conn:
        finish = (
            update(deliveries)
            .where(key.where(), _held_by(claim))
            .values(status=status.value, lease_expires_at=None, updated_at=now, **values)
        )
        finished = _update_one(conn, finish, key)
        if finished is None:
            current = _fetch(conn, key)
            raise StorageError(
                f"delivery {key} is no longer held by this claim (attempt {claim.row.attempts} by "
                f"{claim.row.claimed_by}); it is now {current.status.value}, attempt {current.attempts} by "
                f"{current.claimed_by}"
            )
        return finished


# --- reading ------------------------------------------------------------------------------------------------------


def last_sent(store: Store, *, report_id: str, recipient: str, format: str, channel: str) -> LedgerRow | None:
    """The newest sent delivery of this report to this recipient in this format and channel (send_only_if_changed)."""
    query = (
        select(deliveries)
        .where(
            deliveries.c.report_id == report_id,
            deliveries.c.recipient == recipient,
            deliveries.c.format == format,
            deliveries.c.channel == channel,
            deliveries.c.status == LedgerStatus.SENT.value,
        )
        .order_by(deliveries.c.sent_at.desc(), deliveries.c.id.desc())
        .limit(1)
    )
    with store.read() as conn:
        found = conn.execute(query).mappings().first()
    return None if found is None else LedgerRow.model_validate(dict(found))


def list_deliveries(
    store: Store,
    *,
    report_id: str | None = None,
    recipient: str | None = None,
    status: LedgerStatus | str | None = None,
    limit: int = 100,
) -> list[LedgerRow]:
    """Deliveries, most recently updated first, optionally filtered."""
    if not 1 <= limit <= 10_000:
        raise ConfigError("limit must be between 1 and 10000", field="limit")
    query = select(deliveries).order_by(deliveries.c.updated_at.desc(), deliveries.c.id.desc()).limit(limit)
    if report_id is not None:
        query = query.where(deliveries.c.report_id == report_id)
    if recipient is not None:
        query = query.where(deliveries.c.recipient == recipient)
    if status is not None:
        query = query.where(deliveries.c.status == _status(status).value)
    with store.read() as conn:
        return [LedgerRow.model_validate(dict(row)) for row in conn.execute(query).mappings()]


def audit(store: Store, recipient: str) -> list[AuditEntry]:
    """Everything sent to ``recipient``, newest first: when, which report and run, which file, which data scope."""
    query = (
        select(deliveries)
        .where(deliveries.c.recipient == recipient, deliveries.c.status == LedgerStatus.SENT.value)
        .order_by(deliveries.c.sent_at.desc(), deliveries.c.id.desc())
    )
    with store.read() as conn:
        rows = [LedgerRow.model_validate(dict(row)) for row in conn.execute(query).mappings()]
    return [
        AuditEntry(
            when=row.sent_at or row.updated_at,
            report_id=row.report_id,
            run_key=row.run_key,
            format=row.format,
            channel=row.channel,
            status=row.status,
            uri=row.uri,
            sha256=row.sha256,
            bytes=row.bytes,
            rows=row.rows,
            token_jti=row.token_jti,
            secure_filters=row.secure_filters or {},
        )
        for row in rows
    ]


# --- helpers ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    """The unique key of a delivery."""

    run_key: str
    recipient: str
    format: str
    channel: str

    @classmethod
    def build(cls, *, run_key: str, recipient: str, format: str, channel: str) -> _Key:
        check_run_key(run_key)
        for name, value in (("recipient", recipient), ("format", format), ("channel", channel)):
            _check_identifier(value, name)
        return cls(run_key, recipient, format, channel)

    @classmethod
    def from_row(cls, row: LedgerRow) -> _Key:
        return cls(row.run_key, row.recipient, row.format, row.channel)

    def values(self) -> dict[str, str]:
        return {"run_key": self.run_key, "recipient": self.recipient, "format": self.format, "channel": self.channel}

    def where(self) -> ColumnElement[bool]:
        return and_(*(deliveries.c[name] == value for name, value in self.values().items()))

    def __str__(self) -> str:
        return f"{self.run_key}/{self.recipient}/{self.format}/{self.channel}"


def _insert_if_absent(conn: Connection, values: dict[str, Any], key: _Key) -> LedgerRow | None:
    """Insert the row unless its key exists; the row as inserted, or None if the key was there already."""
    backend = conn.dialect.name
    if backend in {"sqlite", "postgresql"}:
        dialect_insert = sqlite.insert if backend == "sqlite" else postgresql.insert
        statement = (
            dialect_insert(deliveries)
            .values(values)
            .on_conflict_do_nothing(index_elements=["run_key", "recipient", "format", "channel"])
            # RETURNING says whether a row went in (rowcount does not once the driver returns rows: -1 on psycopg),
            # and gives it back without a second query.
            .returning(*deliveries.c)
        )
        found = conn.execute(statement).mappings().first()
        return None if found is None else LedgerRow.model_validate(dict(found))
    # Other backends: a savepoint, so a duplicate key does not abort the enclosing transaction.
    try:
        with conn.begin_nested():
            conn.execute(insert(deliveries).values(values))
    except sa_exc.IntegrityError:
        return None
    return _fetch(conn, key)


def _update_one(conn: Connection, statement: Update, key: _Key) -> LedgerRow | None:
    """Run an UPDATE of the row ``key`` (with its conditions); the row after it, or None if it matched nothing."""
    if conn.dialect.update_returning:  # SQLite 3.35+, PostgreSQL: one round trip
        found = conn.execute(statement.returning(*deliveries.c)).mappings().first()
        return None if found is None else LedgerRow.model_validate(dict(found))
    return _fetch(conn, key) if conn.execute(statement).rowcount == 1 else None


def _reclaimable(now: datetime) -> ColumnElement[bool]:
    """A failed row, or a pending one whose lease ran out: its claimer crashed, or outlived ``lease_seconds``."""
    lapsed = or_(deliveries.c.lease_expires_at.is_(None), deliveries.c.lease_expires_at < now)
    return or_(
        deliveries.c.status == LedgerStatus.FAILED.value,
        and_(deliveries.c.status == LedgerStatus.PENDING.value, lapsed),
    )


def _held_by(claim: ClaimResult) -> ColumnElement[bool]:
    return and_(
        deliveries.c.status == LedgerStatus.PENDING.value,
        deliveries.c.claimed_by == claim.row.claimed_by,
        deliveries.c.attempts == claim.row.attempts,
    )


def _fetch(conn: Connection, key: _Key) -> LedgerRow:
    found = conn.execute(select(deliveries).where(key.where())).mappings().one()
    return LedgerRow.model_validate(dict(found))


def _status(value: LedgerStatus | str) -> LedgerStatus:
    try:
        return LedgerStatus(value)
    except ValueError as error:
        allowed = ", ".join(s.value for s in LedgerStatus)
        raise ConfigError(f"unknown delivery status {value!r}: one of {allowed}", field="status") from error


def _check_identifier(value: str, name: str) -> None:
    if not IDENTIFIER_RE.fullmatch(value):
        raise ConfigError(f"{name} {value[:130]!r} is not a valid identifier", field=name)


def _check_run_id(run_id: str) -> None:
    if not 0 < len(run_id) <= 128:
        raise ConfigError("run_id must be 1-128 characters", field="run_id")
