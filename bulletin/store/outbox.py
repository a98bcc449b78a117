"""The outbox mechanism that webhook messages and scheduled events share: claim with a lease, then record the
attempt with a compare-and-set.

A dispatcher claims a due row by an UPDATE that only matches while the row is claimable, setting a fresh token in
``claimed_by`` and a lease: of N dispatchers exactly one matches (SQLite's write lock; PostgreSQL's row lock,
re-checked under READ COMMITTED). It sends, then logs the attempt and moves the row on with an UPDATE guarded by
its token and the status it claimed in, so a dispatcher whose lease lapsed (and was taken over) cannot overwrite
the newer claim's outcome. What "claimable" and the statuses mean stays with each outbox; this module holds the
statements. Every outbox table has ``id``, ``status``, ``claimed_by``, ``lease_expires_at`` and ``updated_at``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, RowMapping, Table, insert, select, update

from bulletin.errors import ConfigError
from bulletin.store.base import truncate_utf8


def check_lease(lease_seconds: float, maximum: float) -> None:
    if not 0 < lease_seconds <= maximum:
        raise ConfigError(f"lease_seconds must be in (0, {maximum}]", field="lease_seconds")


def take_lease(
    conn: Connection,
    table: Table,
    row_id: str,
    *,
    claimable: ColumnElement[bool],
    lease_seconds: float,
    now: datetime,
    **values: Any,
) -> str | None:
    """Claim ``row_id`` while ``claimable`` holds (setting ``values`` too); its token, or None if another has it."""
    token = uuid.uuid4().hex
    taken = conn.execute(
        update(table)
        .where(table.c.id == row_id, claimable)
        .values(claimed_by=token, lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now, **values)
    ).rowcount
    return token if taken == 1 else None


def settle(conn: Connection, table: Table, row_id: str, *, token: str, held: str, now: datetime, **values: Any) -> bool:
    """Release the claim ``token`` on ``row_id`` (still in status ``held``) and set ``values``: the
    compare-and-set. False when the lease lapsed and another claim took the row over: then nothing changes."""
    return (
        conn.execute(
            update(table)
            .where(table.c.id == row_id, table.c.status == held, table.c.claimed_by == token)
            .values(claimed_by=None, lease_expires_at=None, updated_at=now, **values)
        ).rowcount
        == 1
    )


def log_attempt(
    conn: Connection,
    log: Table,
    *,
    response_body: str | None,
    response_max: int,
    error: str | None,
    error_max: int,
    duration_ms: int,
    **values: Any,
) -> RowMapping:
    """Insert one attempt into ``log`` (answer and error cut to their limits) and return the row as stored."""
    attempt_id = conn.execute(
        insert(log)
        .values(
            response_body=None if response_body is None else truncate_utf8(response_body, response_max),
            error=None if error is None else error[:error_max],
            duration_ms=max(0, duration_ms),
            **values,
        )
        .returning(log.c.id)
    ).scalar_one()
    return conn.execute(select(log).where(log.c.id == attempt_id)).mappings().one()
