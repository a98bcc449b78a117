"""Outbound webhooks in the state store: endpoints (the subscribers), their messages and every attempt.

A message is one event for one endpoint; its id is the ``webhook-id`` header, the same on every attempt, and its
``payload`` holds the exact bytes that are signed and sent. A dispatcher *claims* a due message with a
compare-and-set UPDATE (pending and due, or delivering under a lapsed lease) that stamps a fresh claim token, so two
dispatchers never send one message at the same time; an attempt moves its message on only under the token that
claimed it (a dispatcher whose lease was taken over still logs its attempt, but changes nothing else).

This module is the one to import: it re-exports the endpoint functions (``bulletin.store.webhook_endpoints``), the
row models (``bulletin.store.webhook_schema``) and the inbound receivers' replay protection
(``bulletin.store.inbound``). Every function takes the clock (``now``) as an argument.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, insert, or_, select, update

from bulletin.errors import ConfigError, NotFoundError, StorageError
from bulletin.store.base import aware, check_limit
from bulletin.store.db import Store
from bulletin.store.inbound import inbound_receipts, prune_inbound, record_inbound
from bulletin.store.outbox import check_lease, log_attempt, settle, take_lease
from bulletin.store.webhook_endpoints import (
    add_endpoint,
    disable_endpoint,
    enable_endpoint,
    fetch_endpoint,
    get_endpoint,
    list_endpoints,
    remove_endpoint,
    rotate_secret,
    signing_secrets,
    track_failing_streak,
)
from bulletin.store.webhook_schema import (
    ALL_EVENTS,
    ERROR_MAX,
    EVENT_TYPES,
    LEASE_SECONDS_MAX,
    RESPONSE_BODY_MAX,
    STYLES,
    Attempt,
    Endpoint,
    Message,
    MessageClaim,
    MessageStatus,
    Outcome,
    RecordedAttempt,
    Style,
    check_secret,
    check_url,
    event_body,
    generate_secret,
    webhook_attempts,
    webhook_endpoints,
    webhook_messages,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ALL_EVENTS",
    "EVENT_TYPES",
    "STYLES",
    "Attempt",
    "Endpoint",
    "Message",
    "MessageClaim",
    "MessageStatus",
    "Outcome",
    "RecordedAttempt",
    "Style",
    "add_endpoint",
    "check_secret",
    "check_url",
    "claim_message",
    "disable_endpoint",
    "due_messages",
    "enable_endpoint",
    "enabled_endpoints",
    "enqueue",
    "enqueue_events",
    "event_body",
    "generate_secret",
    "get_endpoint",
    "get_message",
    "inbound_receipts",
    "list_endpoints",
    "list_messages",
    "message_attempts",
    "prune_inbound",
    "record_attempt",
    "record_inbound",
    "redeliver",
    "remove_endpoint",
    "rotate_secret",
    "signing_secrets",
]


# --- messages -----------------------------------------------------------------------------------------------------


def enqueue(
    store: Store,
    *,
    event_type: str,
    payload: dict[str, Any],
    now: datetime,
    endpoint_ids: Sequence[str] | None = None,
    delay_seconds: float = 0.0,
    org: str | None = None,
) -> list[Message]:
    """One pending message per enabled endpoint subscribed to ``event_type`` that hears from ``org`` (the event's
    organisation: org-less endpoints hear everything, an organisation's only its own), all with the same body.

    With ``endpoint_ids``, exactly those endpoints (when enabled), subscribed or not: a ``ping`` or an
    ``endpoint.disabled`` notice is addressed, not subscribed to. An unknown id is a NotFoundError.
    """
    now = aware(now)
    body = event_body(event_type, payload, now=now)
    due = now + timedelta(seconds=max(0.0, delay_seconds))
    with store.write() as conn:
        if endpoint_ids is None:
            targets = [e for e in _enabled(conn) if e.hears(event_type, org)]
        else:
            targets = [e for e in (fetch_endpoint(conn, i) for i in dict.fromkeys(endpoint_ids)) if e.enabled]
        rows = _message_rows(event_type, body, targets, now=now, due=due)
        if rows:
            conn.execute(insert(webhook_messages), rows)
        return [_message(conn, row["id"]) for row in rows]


def enqueue_events(
    store: Store, events: Sequence[tuple[str, dict[str, Any], str | None]], *, now: datetime, delay_seconds: float = 0.0
) -> list[str]:
    """``enqueue`` for many ``(event_type, payload, org)`` at once, in one transaction; the new messages' ids.

    A run's events: a thousand recipients are one write, not a thousand. An event whose body cannot be encoded
    (too large) is left out and logged; the others are queued.
    """
    now = aware(now)
    due = now + timedelta(seconds=max(0.0, delay_seconds))
    with store.write() as conn:
        endpoints = _enabled(conn)
        rows: list[dict[str, Any]] = []
        for event_type, payload, org in events:
            targets = [e for e in endpoints if e.hears(event_type, org)]
            if not targets:
                continue
            try:
                body = event_body(event_type, payload, now=now)
            except ConfigError as exc:  # one event that cannot be sent must not hold back the others
                logger.warning("webhook event %s not queued: %s", event_type, exc)
                continue
            rows += _message_rows(event_type, body, targets, now=now, due=due)
        if rows:
            conn.execute(insert(webhook_messages), rows)
    return [row["id"] for row in rows]


def enabled_endpoints(store: Store) -> list[Endpoint]:
    with store.read() as conn:
        return _enabled(conn)


def _enabled(conn: Connection) -> list[Endpoint]:
    return _endpoints(conn, select(webhook_endpoints).where(webhook_endpoints.c.enabled.is_(True)))


def _message_rows(
    event_type: str, body: str, targets: Sequence[Endpoint], *, now: datetime, due: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "id": f"msg_{uuid.uuid4().hex}",
            "endpoint_id": endpoint.id,
            "event_type": event_type,
            "payload": body,
            "status": MessageStatus.PENDING.value,
            "attempts": 0,
            "next_attempt_at": due,
            "created_at": now,
            "updated_at": now,
        }
        for endpoint in targets
    ]


def get_message(store: Store, message_id: str) -> Message:
    with store.read() as conn:
        return _message(conn, message_id)


def list_messages(
    store: Store, *, endpoint_id: str | None = None, status: MessageStatus | None = None, limit: int = 100
) -> list[Message]:
    """Messages, newest first, optionally of one endpoint or status."""
    query = select(webhook_messages).order_by(webhook_messages.c.created_at.desc(), webhook_messages.c.id)
    if endpoint_id is not None:
        query = query.where(webhook_messages.c.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(webhook_messages.c.status == status.value)
    with store.read() as conn:
        return [Message.model_validate(dict(r)) for r in conn.execute(query.limit(check_limit(limit))).mappings()]


def due_messages(store: Store, *, now: datetime, limit: int, message_ids: Sequence[str] | None = None) -> list[Message]:
    """Messages an attempt is due for (soonest first), of enabled endpoints; ``message_ids`` narrows the choice."""
    query = select(webhook_messages).where(_claimable(aware(now)))
    if message_ids is not None:
        query = query.where(webhook_messages.c.id.in_(list(message_ids)))
    query = query.order_by(webhook_messages.c.next_attempt_at, webhook_messages.c.id).limit(check_limit(limit))
    with store.read() as conn:
        return [Message.model_validate(dict(row)) for row in conn.execute(query).mappings()]


def claim_message(store: Store, message_id: str, *, lease_seconds: float, now: datetime) -> MessageClaim | None:
    """Take the right to attempt ``message_id`` now, or None if it is not due or another dispatcher holds it.

    ``lease_seconds`` must outlast the attempt: once it runs out, another dispatcher may claim the message.
    """
    check_lease(lease_seconds, LEASE_SECONDS_MAX)
    now = aware(now)
    with store.write() as conn:
        token = take_lease(
            conn,
            webhook_messages,
            message_id,
            claimable=_claimable(now),
            lease_seconds=lease_seconds,
            now=now,
            status=MessageStatus.DELIVERING.value,
        )
        if token is None:
            return None
        message = _message(conn, message_id)
        return MessageClaim(message=message, endpoint=fetch_endpoint(conn, message.endpoint_id), token=token)


def record_attempt(
    store: Store,
    claim: MessageClaim,
    *,
    attempted_at: datetime,
    status_code: int | None,
    duration_ms: int,
    response_body: str | None,
    error: str | None,
    outcome: Outcome,
    message_status: MessageStatus,
    next_attempt_at: datetime | None,
    now: datetime,
) -> RecordedAttempt:
    """Log one attempt, move its message on (if ``claim`` still holds it) and track the endpoint's failing streak.

    The endpoint's ``failing_since`` is set by the first failure after a success and cleared by a success.
    ``NotFoundError`` when the endpoint was removed, with its messages, while the request was in flight: there is
    nothing left to record the attempt against.
    """
    _check_attempt_leaves(message_status, next_attempt_at)
    now, attempted_at = aware(now), aware(attempted_at)
    message_id, endpoint_id = claim.message.id, claim.endpoint.id
    with store.write() as conn:
        _lock_message(conn, message_id)
        found = log_attempt(
            conn,
            webhook_attempts,
            response_body=response_body,
            response_max=RESPONSE_BODY_MAX,
            error=error,
            error_max=ERROR_MAX,
            duration_ms=duration_ms,
            message_id=message_id,
            endpoint_id=endpoint_id,
            attempted_at=attempted_at,
            status_code=status_code,
            outcome=outcome,
        )
        applied = settle(
            conn,
            webhook_messages,
            message_id,
            token=claim.token,
            held=MessageStatus.DELIVERING.value,
            now=now,
            status=message_status.value,
            attempts=webhook_messages.c.attempts + 1,
            next_attempt_at=next_attempt_at if message_status is MessageStatus.PENDING else None,
            last_status=status_code,
            last_error=None if error is None else error[:ERROR_MAX],
            delivered_at=attempted_at if message_status is MessageStatus.DELIVERED else None,
        )
        track_failing_streak(conn, endpoint_id, outcome, attempted_at)
        return RecordedAttempt(
            attempt=Attempt.model_validate(dict(found)),
            message=_message(conn, message_id),
            endpoint=fetch_endpoint(conn, endpoint_id),
            applied=applied,
        )


def _check_attempt_leaves(message_status: MessageStatus, next_attempt_at: datetime | None) -> None:
    if message_status is MessageStatus.DELIVERING:
        raise ConfigError("an attempt leaves its message pending, delivered or failed")
    if message_status is MessageStatus.PENDING and next_attempt_at is None:
        raise ConfigError("a message left pending needs next_attempt_at")


def _lock_message(conn: Connection, message_id: str) -> None:
    """``NotFoundError`` unless the message is still there, and lock its row until the transaction ends.

    The lock (PostgreSQL; SQLite's write transaction holds the whole database) keeps a removal from slipping in
    between this check and the attempt's insert, which would then break the foreign key.
    """
    still_there = conn.execute(
        select(webhook_messages.c.id).where(webhook_messages.c.id == message_id).with_for_update()
    ).first()
    if still_there is None:
        raise NotFoundError(f"webhook message {message_id} was removed with its endpoint", field="message_id")


def message_attempts(
    store: Store, *, message_id: str | None = None, endpoint_id: str | None = None, limit: int = 100
) -> list[Attempt]:
    """Logged attempts, newest first, optionally of one message or endpoint."""
    query = select(webhook_attempts).order_by(webhook_attempts.c.attempted_at.desc(), webhook_attempts.c.id.desc())
    if message_id is not None:
        query = query.where(webhook_attempts.c.message_id == message_id)
    if endpoint_id is not None:
        query = query.where(webhook_attempts.c.endpoint_id == endpoint_id)
    with store.read() as conn:
        return [Attempt.model_validate(dict(r)) for r in conn.execute(query.limit(check_limit(limit))).mappings()]


def redeliver(store: Store, message_id: str, *, now: datetime) -> Message:
    """Put a failed or delivered message back to pending, due now, with a fresh retry schedule (its log is kept)."""
    now = aware(now)
    with store.write() as conn:
        message = _message(conn, message_id)
        if not fetch_endpoint(conn, message.endpoint_id).enabled:
            raise ConfigError(f"endpoint {message.endpoint_id} is disabled: enable it before redelivering")
        requeued = conn.execute(
            update(webhook_messages)
            .where(
                webhook_messages.c.id == message_id,
                webhook_messages.c.status.in_([MessageStatus.FAILED.value, MessageStatus.DELIVERED.value]),
            )
            .values(status=MessageStatus.PENDING.value, attempts=0, next_attempt_at=now, updated_at=now)
        ).rowcount
        if requeued != 1:
            raise StorageError(
                f"message {message_id} is {message.status.value}: only a finished one can be redelivered"
            )
        return _message(conn, message_id)


# --- helpers ------------------------------------------------------------------------------------------------------


def _claimable(now: datetime) -> ColumnElement[bool]:
    """Due and pending, or delivering under a lapsed lease (its dispatcher died); of an enabled endpoint."""
    enabled = select(webhook_endpoints.c.id).where(webhook_endpoints.c.enabled.is_(True))
    return and_(
        or_(
            and_(
                webhook_messages.c.status == MessageStatus.PENDING.value,
                webhook_messages.c.next_attempt_at <= now,
            ),
            and_(
                webhook_messages.c.status == MessageStatus.DELIVERING.value,
                webhook_messages.c.lease_expires_at < now,
            ),
        ),
        webhook_messages.c.endpoint_id.in_(enabled.scalar_subquery()),
    )


def _endpoints(conn: Connection, query: Any) -> list[Endpoint]:
    return [Endpoint.model_validate(dict(row)) for row in conn.execute(query).mappings()]


def _message(conn: Connection, message_id: str) -> Message:
    found = conn.execute(select(webhook_messages).where(webhook_messages.c.id == message_id)).mappings().first()
    if found is None:
        raise NotFoundError(f"no webhook message {message_id[:60]!r}", field="message_id")
    return Message.model_validate(dict(found))
