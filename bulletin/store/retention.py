"""Deleting what is past its retention from the state store, in bounded batches (``bulletin.retention`` decides
the cutoffs; this module only deletes, or counts on a dry run).

Each batch is one write transaction of at most ``batch`` rows, so a prune never holds SQLite's write lock (or
PostgreSQL's row locks) for long: deliveries and webhook dispatchers running meanwhile wait one batch at most. The
condition that makes a row due is evaluated again inside every batch's transaction, so a row that changed since the
prune started (a run key claimed again, a message redelivered) is no longer due and stays.

The ledger is pruned by run key, whole: a run key's rows go only once its newest row is older than the cutoff and
none of them is pending under a live lease. While a run can still be retried (a flow retry, a shard restarted, a
re-run of its slot or ``bulletin run --run-key``), its rows have changed recently or are claimed, so all of them stay:
deleting only its sent rows would let a retry send them again (docs/retention.md, "What the ledger keeps").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, Table, and_, case, delete, func, or_, select

from bulletin.retention import Kind
from bulletin.store.base import aware
from bulletin.store.db import Store
from bulletin.store.inbound import inbound_receipts
from bulletin.store.ledger_schema import LedgerStatus, deliveries
from bulletin.store.scheduled_event_schema import EventStatus, scheduled_event_invocations, scheduled_events
from bulletin.store.webhook_schema import MessageStatus, webhook_attempts, webhook_messages

#: Run keys whose eligibility one ledger batch checks again (an IN list the unique index on run_key serves).
RUN_KEYS_PER_CHUNK = 500
_FINISHED_MESSAGES = (MessageStatus.DELIVERED.value, MessageStatus.FAILED.value)
_FINISHED_EVENTS = tuple(s.value for s in EventStatus if s is not EventStatus.SCHEDULED)
STORE_KINDS = (
    Kind.LEDGER,
    Kind.WEBHOOK_ATTEMPTS,
    Kind.WEBHOOK_MESSAGES,
    Kind.INBOUND_RECEIPTS,
    Kind.SCHEDULED_EVENT_INVOCATIONS,
    Kind.SCHEDULED_EVENTS,
)


@dataclass
class Pruned:
    """What one kind's prune deleted (or, on a dry run, would delete): rows, and the size of each batch."""

    kind: Kind
    rows: int = 0
    batches: list[int] = field(default_factory=list)


def old_messages(cutoff: datetime) -> ColumnElement[bool]:
    """Finished webhook messages (delivered, or failed for good) whose last change is before ``cutoff``; pending
    and delivering ones are still to be sent and stay whatever their age."""
    return and_(webhook_messages.c.status.in_(_FINISHED_MESSAGES), webhook_messages.c.updated_at < cutoff)


def old_events(cutoff: datetime) -> ColumnElement[bool]:
    """Scheduled events that are over (delivered, error, dead, cancelled) since before ``cutoff``."""
    return and_(scheduled_events.c.status.in_(_FINISHED_EVENTS), scheduled_events.c.updated_at < cutoff)


def old_ledger_row(cutoff: datetime, now: datetime) -> ColumnElement[bool]:
    """A ledger row unchanged since before ``cutoff`` and not pending under a live lease."""
    lease = deliveries.c.lease_expires_at
    not_live = or_(deliveries.c.status != LedgerStatus.PENDING.value, lease.is_(None), lease < now)
    return and_(deliveries.c.updated_at < cutoff, not_live)


def prunable_run_keys(cutoff: datetime, now: datetime) -> Callable[[Sequence[str] | None], ColumnElement[bool]]:
    """The condition "this ledger row's run key may go", optionally limited to some run keys."""
    live = and_(deliveries.c.status == LedgerStatus.PENDING.value, deliveries.c.lease_expires_at >= now)

    def condition(among: Sequence[str] | None) -> ColumnElement[bool]:
        keys = select(deliveries.c.run_key)
        if among is not None:
            keys = keys.where(deliveries.c.run_key.in_(among))
        keys = keys.group_by(deliveries.c.run_key).having(
            func.max(deliveries.c.updated_at) < cutoff, func.sum(case((live, 1), else_=0)) == 0
        )
        return deliveries.c.run_key.in_(keys)

    return condition


def _due(kind: Kind, cutoff: datetime) -> tuple[Table, ColumnElement[bool]]:
    """The table of ``kind`` (not the ledger) and the condition that makes its rows due."""
    if kind is Kind.WEBHOOK_ATTEMPTS:
        return webhook_attempts, webhook_attempts.c.message_id.in_(
            select(webhook_messages.c.id).where(old_messages(cutoff))
        )
    if kind is Kind.WEBHOOK_MESSAGES:
        return webhook_messages, old_messages(cutoff)
    if kind is Kind.INBOUND_RECEIPTS:
        return inbound_receipts, inbound_receipts.c.received_at < cutoff
    if kind is Kind.SCHEDULED_EVENT_INVOCATIONS:
        events = select(scheduled_events.c.id).where(old_events(cutoff))
        return scheduled_event_invocations, scheduled_event_invocations.c.event_id.in_(events)
    if kind is Kind.SCHEDULED_EVENTS:
        return scheduled_events, old_events(cutoff)
    raise ValueError(f"{kind} is not a table of the state store pruned by _due")


def _delete_batches(
    store: Store,
    table: Table,
    condition: ColumnElement[bool],
    batch: int,
    pruned: Pruned,
    recheck: ColumnElement[bool] | None = None,
) -> None:
    """Delete the rows of ``table`` matching ``condition``, at most ``batch`` per transaction, until none is left.

    ``recheck``: a condition on the row's own columns, put on the DELETE itself, because PostgreSQL (READ COMMITTED)
    evaluates it again on a row that another transaction changed meanwhile, which it does not do for the chosen ids:
    a ledger row claimed, a message redelivered or an event rescheduled while being pruned is not deleted."""
    ids = table.c.id
    while True:
        with store.write() as conn:
            chosen = select(ids).where(condition).limit(batch).scalar_subquery()
            statement = delete(table).where(ids.in_(chosen))
            if recheck is not None:
                statement = statement.where(recheck)
            deleted = int(conn.execute(statement).rowcount)
        pruned.batches.append(deleted)
        pruned.rows += deleted
        if deleted < batch:
            return


def _count(conn: Connection, table: Table, condition: ColumnElement[bool]) -> int:
    return int(conn.execute(select(func.count()).select_from(table).where(condition)).scalar_one())


def prune_kind(store: Store, kind: Kind, *, cutoff: datetime, now: datetime, batch: int, dry_run: bool) -> Pruned:
    """Delete (``dry_run``: count) the rows of ``kind`` older than ``cutoff``, ``batch`` rows per transaction."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    cutoff, now = aware(cutoff, field="cutoff"), aware(now, field="now")
    pruned = Pruned(kind)
    if kind is Kind.LEDGER:
        _prune_ledger(store, cutoff, now, batch, dry_run, pruned)
        return pruned
    table, condition = _due(kind, cutoff)
    if dry_run:
        with store.read() as conn:
            pruned.rows = _count(conn, table, condition)
        return pruned
    recheck = {Kind.WEBHOOK_MESSAGES: old_messages(cutoff), Kind.SCHEDULED_EVENTS: old_events(cutoff)}.get(kind)
    _delete_batches(store, table, condition, batch, pruned, recheck=recheck)
    return pruned


def _prune_ledger(store: Store, cutoff: datetime, now: datetime, batch: int, dry_run: bool, pruned: Pruned) -> None:
    """The ledger by run key: find the run keys that may go, then delete their rows in batches, each batch checking
    again that its run keys still may go (a run key claimed meanwhile stops being deleted at once)."""
    may_go = prunable_run_keys(cutoff, now)
    with store.read() as conn:
        if dry_run:
            pruned.rows = _count(conn, deliveries, may_go(None))
            return
        keys = list(conn.execute(select(deliveries.c.run_key).where(may_go(None)).distinct()).scalars())
    for start in range(0, len(keys), RUN_KEYS_PER_CHUNK):
        chunk = keys[start : start + RUN_KEYS_PER_CHUNK]
        condition = and_(deliveries.c.run_key.in_(chunk), may_go(chunk))
        _delete_batches(store, deliveries, condition, batch, pruned, recheck=old_ledger_row(cutoff, now))
