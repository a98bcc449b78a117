"""One-off scheduled webhook events in the state store: create, read, list, cancel, claim, log each attempt.

An event is due when it is ``scheduled`` and its ``due_at`` (``schedule_at``, then each ``next_retry_at``) has
come. A dispatcher *claims* it with a compare-and-set UPDATE (scheduled, due, and unclaimed or under a lapsed lease)
that stamps a fresh token, so two dispatchers never attempt one event at once; ``record_invocation`` moves the event
on only under the token that claimed it. A claim that finds the event past its tolerance closes it as ``dead``
instead, in the same transaction. ``cancel_event`` is the same compare-and-set from the other side: it wins only
over an event nobody holds, so a cancel and a send never both happen.

Each organisation signs its events with one secret (``bulletin.store.scheduled_event_secrets``), made on first use
and rotated with an overlap, like a webhook endpoint's. This module re-exports it and the schema's names. Every
function takes the clock (``now``) as an argument.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, delete, insert, or_, select, update

from bulletin.errors import ConfigError, NotFoundError, RequestError, StorageError
from bulletin.store.base import aware, check_limit, newest_first
from bulletin.store.db import Store
from bulletin.store.outbox import check_lease, log_attempt, settle, take_lease
from bulletin.store.scheduled_event_schema import (
    COMMENT_MAX,
    ERROR_MAX,
    EVENT_ID_PREFIX,
    MASK,
    PROCESSED,
    RESPONSE_BODY_MAX,
    EventClaim,
    EventStatus,
    Header,
    HeaderIn,
    Invocation,
    OrgSecret,
    RetryConf,
    ScheduledEvent,
    check_headers,
    event_body,
    logged_headers,
    scheduled_event_invocations,
    scheduled_events,
)
from bulletin.store.scheduled_event_secrets import org_secret, rotate_org_secret
from bulletin.store.webhook_schema import check_url

__all__ = [
    "MASK",
    "PROCESSED",
    "EventClaim",
    "EventStatus",
    "Header",
    "HeaderIn",
    "Invocation",
    "OrgSecret",
    "RetryConf",
    "ScheduledEvent",
    "cancel_event",
    "claim_event",
    "create_event",
    "cursor_of",
    "delete_event",
    "due_events",
    "get_event",
    "invocations",
    "list_events",
    "logged_headers",
    "org_secret",
    "record_invocation",
    "rotate_org_secret",
    "set_flow_run",
]

LEASE_SECONDS_MAX = 3_600
LIST_LIMIT_MAX = 500


# --- events -------------------------------------------------------------------------------------------------------


def create_event(
    store: Store,
    *,
    org: str,
    webhook: str,
    schedule_at: datetime,
    payload: Any,
    headers: Sequence[HeaderIn] = (),
    retry_conf: RetryConf | None = None,
    comment: str | None = None,
    now: datetime,
) -> ScheduledEvent:
    """Store a new scheduled event. The URL is checked for syntax here; the caller runs the SSRF guard too."""
    check_url(webhook)
    checked = check_headers(list(headers))
    if comment is not None and len(comment) > COMMENT_MAX:
        raise RequestError(f"comment is longer than {COMMENT_MAX} characters", field="comment")
    conf = retry_conf or RetryConf()
    now, schedule_at = aware(now), aware(schedule_at)
    event_id = f"{EVENT_ID_PREFIX}{uuid.uuid4().hex}"
    row = {
        "id": event_id,
        "org": org,
        "webhook": webhook,
        "schedule_at": schedule_at,
        "body": event_body(event_id, schedule_at, payload, comment),
        "headers": [{"name": h.name, "value": h.value} for h in checked],
        **conf.model_dump(),
        "comment": comment,
        "status": EventStatus.SCHEDULED.value,
        "tries": 0,
        "due_at": schedule_at,
        "created_at": now,
        "updated_at": now,
    }
    with store.write() as conn:
        conn.execute(insert(scheduled_events).values(row))
        return _event(conn, event_id)


def set_flow_run(store: Store, event_id: str, flow_run_id: str | None, *, now: datetime) -> None:
    """Remember the Prefect flow run scheduled for the event's next attempt (so a cancel can cancel it too)."""
    with store.write() as conn:
        conn.execute(
            update(scheduled_events)
            .where(scheduled_events.c.id == event_id)
            .values(flow_run_id=flow_run_id, updated_at=aware(now))
        )


def delete_event(store: Store, event_id: str) -> None:
    """Remove an event that was never scheduled in Prefect (its creation is being undone)."""
    with store.write() as conn:
        conn.execute(delete(scheduled_event_invocations).where(scheduled_event_invocations.c.event_id == event_id))
        conn.execute(delete(scheduled_events).where(scheduled_events.c.id == event_id))


def get_event(store: Store, event_id: str, *, org: str | None = None) -> ScheduledEvent:
    """The event; NotFoundError if it does not exist or (with ``org``) belongs to another organisation."""
    with store.read() as conn:
        event = _event(conn, event_id)
    if org is not None and event.org != org:
        raise _not_found(event_id)
    return event


def list_events(
    store: Store,
    *,
    org: str,
    statuses: Sequence[EventStatus] | None = None,
    limit: int = 50,
    after: tuple[datetime, str] | None = None,
) -> list[ScheduledEvent]:
    """``org``'s events, newest first, by (created_at, id) strictly after the cursor ``after`` when given.

    Keyset pagination: a page never repeats or skips an event because others were created meanwhile.
    """
    check_limit(limit, LIST_LIMIT_MAX)
    c = scheduled_events.c
    query = select(scheduled_events).where(c.org == org)
    if statuses:
        query = query.where(c.status.in_([s.value for s in statuses]))
    query = newest_first(query, c.created_at, c.id, after=after, limit=limit)
    with store.read() as conn:
        return [ScheduledEvent.model_validate(dict(row)) for row in conn.execute(query).mappings()]


def cancel_event(store: Store, event_id: str, *, org: str, now: datetime) -> ScheduledEvent:
    """Cancel a pending event. Cancelling a cancelled one changes nothing; a processed one, or one being sent
    right now, is a StorageError (409)."""
    now = aware(now)
    with store.write() as conn:
        event = _event(conn, event_id)
        if event.org != org:
            raise _not_found(event_id)
        if event.status is EventStatus.CANCELLED:
            return event
        cancelled = conn.execute(
            update(scheduled_events)
            .where(scheduled_events.c.id == event_id, _unheld(now))
            .values(
                status=EventStatus.CANCELLED.value,
                next_retry_at=None,
                processed_at=now,
                updated_at=now,
            )
        ).rowcount
        if cancelled != 1:
            if event.status is EventStatus.SCHEDULED:
                raise StorageError(f"scheduled event {event_id} is being delivered right now; it cannot be cancelled")
            raise StorageError(f"scheduled event {event_id} is already {event.status.value}; it cannot be cancelled")
        return _event(conn, event_id)


def due_events(
    store: Store, *, now: datetime, limit: int, event_ids: Sequence[str] | None = None
) -> list[ScheduledEvent]:
    """Events an attempt is due for, soonest first (only ``event_ids`` when given)."""
    check_limit(limit)
    query = select(scheduled_events).where(_claimable(aware(now)))
    if event_ids is not None:
        query = query.where(scheduled_events.c.id.in_(list(event_ids)))
    query = query.order_by(scheduled_events.c.due_at, scheduled_events.c.id).limit(limit)
    with store.read() as conn:
        return [ScheduledEvent.model_validate(dict(row)) for row in conn.execute(query).mappings()]


def claim_event(store: Store, event_id: str, *, lease_seconds: float, now: datetime) -> EventClaim | None:
    """Take the right to attempt ``event_id`` now; None if it is not due or another dispatcher holds it.

    An event found past its tolerance is closed as ``dead`` here, in the same transaction, and returned as a claim
    whose ``dead`` is True: send nothing. ``lease_seconds`` must outlast the attempt.
    """
    check_lease(lease_seconds, LEASE_SECONDS_MAX)
    now = aware(now)
    with store.write() as conn:
        token = take_lease(
            conn, scheduled_events, event_id, claimable=_claimable(now), lease_seconds=lease_seconds, now=now
        )
        if token is None:
            return None
        event = _event(conn, event_id)
        if event.is_dead(now):
            late = int((now - event.schedule_at).total_seconds())
            settle(
                conn,
                scheduled_events,
                event_id,
                token=token,
                held=EventStatus.SCHEDULED.value,
                now=now,
                status=EventStatus.DEAD.value,
                last_error=f"not started within tolerance_seconds ({event.tolerance_seconds} s): {late} s late",
                processed_at=now,
            )
            event = _event(conn, event_id)
        return EventClaim(event=event, token=token)


def record_invocation(
    store: Store,
    claim: EventClaim,
    *,
    attempted_at: datetime,
    request_headers: list[dict[str, str]],
    status_code: int | None,
    response_body: str | None,
    duration_ms: int,
    error: str | None,
    status: EventStatus,
    next_retry_at: datetime | None,
    now: datetime,
) -> tuple[Invocation, ScheduledEvent, bool]:
    """Log one attempt and move the event on, if ``claim`` still holds it (the bool says whether it did).

    ``request_headers`` must already be masked (``logged_headers``): this is checked, so no value that could be a
    secret reaches the log by mistake.
    """
    if status not in (EventStatus.SCHEDULED, EventStatus.DELIVERED, EventStatus.ERROR):
        raise ConfigError("an attempt leaves its event scheduled, delivered or error")
    if (status is EventStatus.SCHEDULED) != (next_retry_at is not None):
        raise ConfigError("an event left scheduled needs next_retry_at, and only then")
    if logged_headers({h["name"]: h["value"] for h in request_headers}) != request_headers:
        raise ConfigError("invocation log headers must be masked with logged_headers")
    now, attempted_at = aware(now), aware(attempted_at)
    event_id = claim.event.id
    with store.write() as conn:
        found = log_attempt(
            conn,
            scheduled_event_invocations,
            response_body=response_body,
            response_max=RESPONSE_BODY_MAX,
            error=error,
            error_max=ERROR_MAX,
            duration_ms=duration_ms,
            event_id=event_id,
            attempt=claim.event.tries + 1,
            attempted_at=attempted_at,
            request_headers=request_headers,
            status_code=status_code,
        )
        retry_at = None if next_retry_at is None else aware(next_retry_at)
        applied = settle(
            conn,
            scheduled_events,
            event_id,
            token=claim.token,
            held=EventStatus.SCHEDULED.value,
            now=now,
            status=status.value,
            tries=scheduled_events.c.tries + 1,
            due_at=retry_at if retry_at is not None else scheduled_events.c.due_at,
            next_retry_at=retry_at,
            last_error=None if error is None else error[:ERROR_MAX],
            processed_at=None if status is EventStatus.SCHEDULED else now,
        )
        return Invocation.model_validate(dict(found)), _event(conn, event_id), applied


def invocations(store: Store, event_id: str) -> list[Invocation]:
    """Every attempt at ``event_id``, oldest first."""
    query = (
        select(scheduled_event_invocations)
        .where(scheduled_event_invocations.c.event_id == event_id)
        .order_by(scheduled_event_invocations.c.id)
    )
    with store.read() as conn:
        return [Invocation.model_validate(dict(row)) for row in conn.execute(query).mappings()]


# --- helpers ------------------------------------------------------------------------------------------------------


def _unheld(now: datetime) -> ColumnElement[bool]:
    """Scheduled, and no dispatcher holds it (never claimed, or its lease ran out: that dispatcher died)."""
    c = scheduled_events.c
    return and_(
        c.status == EventStatus.SCHEDULED.value,
        or_(c.claimed_by.is_(None), c.lease_expires_at < now),
    )


def _claimable(now: datetime) -> ColumnElement[bool]:
    return and_(_unheld(now), scheduled_events.c.due_at <= now)


def _event(conn: Connection, event_id: str) -> ScheduledEvent:
    found = conn.execute(select(scheduled_events).where(scheduled_events.c.id == event_id)).mappings().first()
    if found is None:
        raise _not_found(event_id)
    return ScheduledEvent.model_validate(dict(found))


def _not_found(event_id: str) -> NotFoundError:
    # The same answer for another organisation's event as for a missing one.
    return NotFoundError(f"no scheduled event {event_id[:60]!r}", field="event_id")


def cursor_of(event: ScheduledEvent) -> tuple[datetime, str]:
    """The keyset position of ``event`` in ``list_events``' order."""
    return event.created_at, event.id
