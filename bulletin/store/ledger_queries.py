"""Reading the delivery ledger: the last file sent (``send_only_if_changed``), recent deliveries, and the audit.

The audit answers "which data scope went to this recipient, when, and as which file" from the sent rows alone.
"""

from __future__ import annotations

from sqlalchemy import select

from bulletin.errors import ConfigError
from bulletin.store.base import check_limit
from bulletin.store.db import Store
from bulletin.store.ledger_schema import UNSUBSCRIBED, AuditEntry, LedgerRow, LedgerStatus, deliveries


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
    query = (
        select(deliveries).order_by(deliveries.c.updated_at.desc(), deliveries.c.id.desc()).limit(check_limit(limit))
    )
    if report_id is not None:
        query = query.where(deliveries.c.report_id == report_id)
    if recipient is not None:
        query = query.where(deliveries.c.recipient == recipient)
    if status is not None:
        query = query.where(deliveries.c.status == _status(status).value)
    with store.read() as conn:
        return [LedgerRow.model_validate(dict(row)) for row in conn.execute(query).mappings()]


def run_rows(store: Store, run_key: str) -> list[LedgerRow]:
    """Every row of one run key, in the order they were first claimed: what a sharded run's manifest is read from."""
    query = select(deliveries).where(deliveries.c.run_key == run_key).order_by(deliveries.c.id)
    with store.read() as conn:
        return [LedgerRow.model_validate(dict(row)) for row in conn.execute(query).mappings()]


def audit(store: Store, recipient: str) -> list[AuditEntry]:
    """Everything sent to ``recipient``, newest first: when, which report and run, which file, which data scope.

    Also what was not sent because the person opted out (skipped, reason ``unsubscribed``): an audit of one person
    answers "why did I not get it?" as well as "what did I get?"."""
    sent = deliveries.c.status == LedgerStatus.SENT.value
    opted_out = (deliveries.c.status == LedgerStatus.SKIPPED.value) & (deliveries.c.last_error == UNSUBSCRIBED)
    query = (
        select(deliveries)
        .where(deliveries.c.recipient == recipient, sent | opted_out)
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
            reason=row.last_error if row.status is LedgerStatus.SKIPPED else None,
        )
        for row in rows
    ]


def _status(value: LedgerStatus | str) -> LedgerStatus:
    try:
        return LedgerStatus(value)
    except ValueError as error:
        allowed = ", ".join(s.value for s in LedgerStatus)
        raise ConfigError(f"unknown delivery status {value!r}: one of {allowed}", field="status") from error
