"""The delivery ledger: one row per (run key, recipient, format, channel), so each delivery is sent once.

Prefect's task caching is at-least-once; this table is the real guarantee. A sender first *claims* its row. The
claim is an insert that does nothing on conflict, then a compare-and-set UPDATE that only matches a failed row or a
pending row whose lease has expired (a crashed run). Both statements are atomic on SQLite (inside BEGIN IMMEDIATE)
and on PostgreSQL (the unique index and row locks, re-checked under READ COMMITTED), so of N concurrent claimers
exactly one is told to send. Finishing a row is guarded by ``claimed_by`` and ``attempts``, so a claimer whose lease
was taken over cannot overwrite the newer claim's outcome.

Leases are short (``BULLETIN_CLAIM_LEASE_SECONDS``), so the rows of a claimer that died come back soon; a live claimer
keeps its rows by calling ``renew`` while it works (tasks/delivery/leases.py), under the same guard as finishing.

Every function takes the clock (``now``) as an argument. The table and its row models are in
``bulletin.store.ledger_schema``, run keys in ``bulletin.store.delivery_keys``, reading in
``bulletin.store.ledger_queries``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import ColumnElement, Connection, Update, and_, bindparam, or_, select, update

from bulletin.errors import ClaimLostError, ConfigError, StorageError
from bulletin.models import FilterGroups
from bulletin.store.base import aware
from bulletin.store.db import Store, insert_if_absent
from bulletin.store.delivery_keys import DeliveryKey, check_identifier, check_run_id
from bulletin.store.ledger_schema import (
    ERROR_MAX,
    LEASE_SECONDS_MAX,
    SHA256_RE,
    ClaimOutcome,
    ClaimResult,
    LedgerRow,
    LedgerStatus,
    deliveries,
)

_FILTERS = TypeAdapter(dict[str, FilterGroups])
#: A row still pending under one claim: the claimer and attempt given as parameters (``_holder``). Finishing, renewing
#: and storing intents are guarded by it, so a claimer whose lease was taken over cannot touch the newer claim's row.
_HELD = and_(
    deliveries.c.status == LedgerStatus.PENDING.value,
    deliveries.c.claimed_by == bindparam("held_by"),
    deliveries.c.attempts == bindparam("held_attempts"),
)


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
    key = DeliveryKey.build(run_key=run_key, recipient=recipient, format=format, channel=channel)
    check_identifier(report_id, "report_id")
    check_run_id(run_id)
    check_lease(lease_seconds)
    now = aware(now, "now", field="now")
    with store.write() as conn:
        return claim_in(conn, key, report_id=report_id, run_id=run_id, lease_seconds=lease_seconds, now=now)


def check_lease(lease_seconds: float) -> None:
    if not 0 < lease_seconds <= LEASE_SECONDS_MAX:
        raise ConfigError(f"lease_seconds must be in (0, {LEASE_SECONDS_MAX}]", field="lease_seconds")


def claim_in(
    conn: Connection, key: DeliveryKey, *, report_id: str, run_id: str, lease_seconds: float, now: datetime
) -> ClaimResult:
    """``claim``'s decision inside the caller's write transaction (checked arguments): one or many claims commit
    together (``bulletin.store.ledger_batch``)."""
    lease = now + timedelta(seconds=lease_seconds)
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
    reclaimed = _update_one(conn, key, _returning_row(conn, reclaim))
    if reclaimed is not None:
        return ClaimResult(outcome=ClaimOutcome.CLAIMED, row=reclaimed)
    row = _fetch(conn, key)
    outcome = {
        LedgerStatus.SENT: ClaimOutcome.ALREADY_SENT,
        LedgerStatus.SKIPPED: ClaimOutcome.ALREADY_SKIPPED,
    }.get(row.status, ClaimOutcome.IN_PROGRESS)
    return ClaimResult(outcome=outcome, row=row)


def renew(store: Store, claim: ClaimResult, *, lease_seconds: float, now: datetime) -> bool:
    """Extend the lease of ``claim`` to ``now + lease_seconds``; False when another claim has taken the row over.

    A compare-and-set like finishing: only the claimer of a row still pending under this very attempt extends it.
    A row this claim already finished is left as it is and counts as still this claim's (True), so a renewer racing
    the delivery's own finish does not report a loss. False: the lease lapsed and another run claimed the row; that
    claimer sends it now, and this one can no longer finish it.
    """
    if not claim.claimed:
        raise StorageError(f"cannot renew a delivery that was not claimed ({claim.outcome.value})")
    check_lease(lease_seconds)
    now = aware(now, "now", field="now")
    extend = {"lease_expires_at": now + timedelta(seconds=lease_seconds), "updated_at": now}
    with store.write() as conn:
        if conn.execute(*_held_update(claim, extend)).rowcount == 1:
            return True
        row = _fetch(conn, DeliveryKey.from_row(claim.row))
    return (row.claimed_by, row.attempts) == (claim.row.claimed_by, claim.row.attempts)


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
    file = file_values(sha256=sha256, uri=uri, bytes=bytes, rows=rows, token_jti=token_jti, filters=secure_filters)
    now = aware(now, "now", field="now")
    return _finish(store, claim, now=now, status=LedgerStatus.SENT, last_error=None, sent_at=now, **file)


def mark_storing(
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
) -> bool:
    """Write on the still-pending row of ``claim`` the file it is about to store and where, before storing it.

    Should this run die between storing and ``mark_sent``, the run that takes the row over finds the file there
    (``claim`` returns these values on the row) and records it with ``mark_found`` instead of storing it again.
    False: the claim was taken over meanwhile, nothing written.
    """
    file = file_values(sha256=sha256, uri=uri, bytes=bytes, rows=rows, token_jti=token_jti, filters=secure_filters)
    now = aware(now, "now", field="now")
    if not claim.claimed:
        raise StorageError(f"cannot record a file for a delivery that was not claimed ({claim.outcome.value})")
    with store.write() as conn:
        return storing_in(conn, claim, now=now, **file)


def storing_in(conn: Connection, claim: ClaimResult, *, now: datetime, **file: Any) -> bool:
    """``mark_storing``'s write inside the caller's transaction (checked values: ``file_values``): many intents can
    commit together (``bulletin.store.ledger_batch``). False: the claim was taken over, nothing written."""
    return conn.execute(*_held_update(claim, {**file, "updated_at": now})).rowcount == 1


def mark_found(store: Store, claim: ClaimResult, *, now: datetime) -> LedgerRow:
    """Record as sent the file an earlier, unfinished attempt wrote on the row (``mark_storing``) and that its
    store was found to hold: the file, its token's jti and scope stay the earlier attempt's."""
    row = claim.row
    if row.uri is None or row.sha256 is None:
        raise StorageError(f"no stored file is recorded on {DeliveryKey.from_row(row)}")
    now = aware(now, "now", field="now")
    return _finish(store, claim, now=now, status=LedgerStatus.SENT, last_error=None, sent_at=now)


def file_values(
    *, sha256: str, uri: str, bytes: int, rows: int, token_jti: str | None, filters: Mapping[str, FilterGroups]
) -> dict[str, Any]:
    if not SHA256_RE.fullmatch(sha256):
        raise ConfigError("sha256 must be 64 lowercase hex digits", field="sha256")
    if bytes < 0 or rows < 0:
        raise ConfigError("bytes and rows cannot be negative")
    try:
        # Validated as filters, so a token (or anything else) cannot be stored as "scope" by mistake.
        scope = _FILTERS.dump_python(_FILTERS.validate_python(dict(filters)), mode="json")
    except ValidationError:
        # Not chained: pydantic's message quotes the rejected input, which may be the very secret kept out here.
        raise ConfigError("secure_filters must map dataset names to filter groups", field="secure_filters") from None
    return {"sha256": sha256, "uri": uri, "bytes": bytes, "rows": rows, "token_jti": token_jti, "secure_filters": scope}


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
    key = DeliveryKey.build(run_key=run_key, recipient=recipient, format=format, channel=channel)
    check_identifier(report_id, "report_id")
    check_run_id(run_id)
    if sha256 is not None and not SHA256_RE.fullmatch(sha256):
        raise ConfigError("sha256 must be 64 lowercase hex digits", field="sha256")
    if claim is not None and not claim.claimed:
        raise StorageError(f"cannot skip through a claim that was not granted ({claim.outcome.value})")
    if claim is not None and DeliveryKey.from_row(claim.row) != key:
        raise ConfigError(f"the claim given is for {DeliveryKey.from_row(claim.row)}, not {key}")
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
        allowed = _reclaimable(now) if claim is None else or_(_reclaimable(now), _HELD)
        holder = None if claim is None else _holder(claim)
        conn.execute(update(deliveries).where(key.where(), allowed).values(**outcome), holder)
        return _fetch(conn, key)


def _finish(store: Store, claim: ClaimResult, *, now: datetime, status: LedgerStatus, **values: Any) -> LedgerRow:
    if not claim.claimed:
        raise StorageError(f"cannot finish a delivery that was not claimed ({claim.outcome.value})")
    with store.write() as conn:
        finished = finish_in(conn, claim, now=now, status=status, **values)
    if isinstance(finished, ClaimLostError):
        raise finished
    return finished


def finish_in(
    conn: Connection, claim: ClaimResult, *, now: datetime, status: LedgerStatus, **values: Any
) -> LedgerRow | ClaimLostError:
    """Finish the row of ``claim`` inside the caller's write transaction: the row, or (returned, not raised, so a
    batch's other rows still commit) the ClaimLostError saying another claim holds it now."""
    key = DeliveryKey.from_row(claim.row)
    finish = {**values, "status": status.value, "lease_expires_at": None, "updated_at": now}
    finished = _update_one(conn, key, *_held_update(claim, finish, returning=conn.dialect.update_returning))
    if finished is not None:
        return finished
    current = _fetch(conn, key)
    return ClaimLostError(
        f"delivery {key} is no longer held by this claim (attempt {claim.row.attempts} by "
        f"{claim.row.claimed_by}); it is now {current.status.value}, attempt {current.attempts} by "
        f"{current.claimed_by}"
    )


def _insert_if_absent(conn: Connection, values: dict[str, Any], key: DeliveryKey) -> LedgerRow | None:
    """Insert the row unless its key exists; the row as inserted, or None if the key was there already."""
    found = insert_if_absent(conn, deliveries, values, unique=tuple(key.values()))
    return None if found is None else LedgerRow.model_validate(dict(found))


def _update_one(
    conn: Connection, key: DeliveryKey, statement: Update, params: Mapping[str, Any] | None = None
) -> LedgerRow | None:
    """Run an UPDATE of the row ``key`` (with its conditions); the row after it, or None if it matched nothing.

    Where the dialect returns rows from an UPDATE (SQLite 3.35+, PostgreSQL: one round trip), ``statement`` returns
    the whole row (``_returning_row``); elsewhere the row is read back."""
    result = conn.execute(statement, params)
    if conn.dialect.update_returning:
        found = result.mappings().first()
        return None if found is None else LedgerRow.model_validate(dict(found))
    return _fetch(conn, key) if result.rowcount == 1 else None


def _returning_row(conn: Connection, statement: Update) -> Update:
    return statement.returning(*deliveries.c) if conn.dialect.update_returning else statement


def _held_update(
    claim: ClaimResult, values: Mapping[str, Any], *, returning: bool = False
) -> tuple[Update, dict[str, Any]]:
    """An UPDATE setting ``values`` on the row of ``claim`` only while that claim holds it (``_HELD``), with its
    parameters: ``conn.execute(*_held_update(...))``."""
    params: dict[str, Any] = {f"key_{name}": value for name, value in DeliveryKey.from_row(claim.row).values().items()}
    params |= _holder(claim)
    params |= {f"set_{name}": value for name, value in values.items()}
    return _held_statement(tuple(values), returning), params


@functools.cache
def _held_statement(columns: tuple[str, ...], returning: bool) -> Update:
    """``_held_update``'s statement for these columns, built once with bound parameters. SQLAlchemy then finds it
    compiled in its cache at once; built anew on each call, its construction and cache key cost a lane about as much
    CPU as running it."""
    c = deliveries.c
    statement = (
        update(deliveries)
        .where(
            *(c[name] == bindparam(f"key_{name}") for name in ("run_key", "recipient", "format", "channel")),
            _HELD,
        )
        .values({name: bindparam(f"set_{name}") for name in columns})
    )
    return statement.returning(*deliveries.c) if returning else statement


def _reclaimable(now: datetime) -> ColumnElement[bool]:
    """A failed row, or a pending one whose lease ran out: its claimer crashed, or outlived ``lease_seconds``."""
    lapsed = or_(deliveries.c.lease_expires_at.is_(None), deliveries.c.lease_expires_at < now)
    return or_(
        deliveries.c.status == LedgerStatus.FAILED.value,
        and_(deliveries.c.status == LedgerStatus.PENDING.value, lapsed),
    )


def _holder(claim: ClaimResult) -> dict[str, Any]:
    """``_HELD``'s parameters for ``claim``."""
    return {"held_by": claim.row.claimed_by, "held_attempts": claim.row.attempts}


def _fetch(conn: Connection, key: DeliveryKey) -> LedgerRow:
    found = conn.execute(select(deliveries).where(key.where())).mappings().one()
    return LedgerRow.model_validate(dict(found))
