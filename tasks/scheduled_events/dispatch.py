"""Deliver due one-off scheduled events (Hasura-style): claim, sign, send once, log, decide what comes next.

One pass (``deliver_due_events``) makes at most one attempt per due event, ``settings.webhook_concurrency`` at a
time, through the webhook sender (``tasks.webhooks.send_attempt``: SSRF guard, pinned connection, no redirects,
4 KB of the answer). Each request carries the event's headers plus Standard Webhooks headers: ``webhook-id`` is the
event id (the same on every retry), with a fresh timestamp and a signature by the organisation's secret (two while
it rotates).

Outcomes (``plan_after``, pure): 2xx delivers; an attempt refused before connecting (the SSRF guard) is an error at
once; anything else is retried ``retry_interval_seconds`` later (or after the receiver's Retry-After, when longer)
until ``num_retries`` retries are spent, then the event is an error. Retries are not slept on: the event goes back
to ``scheduled`` with ``next_retry_at`` and the pass returns it as a *follow-up*, for which the caller schedules
the next flow run. An event found past its ``tolerance_seconds`` at its first attempt is closed as dead by the
claim, and nothing is sent.

Logging: event ids, outcomes, status codes and durations only. The URL, the headers (which may carry the receiver's
credentials) and the signature never reach a log; invocation logs keep the headers masked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from bulletin.clock import Clock
from bulletin.errors import BulletinError
from bulletin.settings import Settings
from bulletin.store.base import check_limit
from bulletin.store.db import Store
from bulletin.store.scheduled_events import (
    EventClaim,
    EventStatus,
    ScheduledEvent,
    claim_event,
    due_events,
    logged_headers,
    org_secret,
    record_invocation,
)
from tasks.webhooks import MAX_TIMEOUT_SECONDS, USER_AGENT, AttemptResult, send_attempt, standard_headers

logger = logging.getLogger(__name__)

#: A claim outlasts the request (at most 30 s) and the write that records it.
LEASE_MARGIN_SECONDS = 60.0
PASS_LIMIT_MAX = 10_000


class Result(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"
    ERROR = "error"
    DEAD = "dead"
    #: Another dispatcher holds it, or it stopped being due (cancelled, delivered): nothing sent.
    BUSY = "busy"
    #: The store failed around the attempt: the lease runs out and a later pass retries.
    FAILED_TO_RECORD = "failed_to_record"


@dataclass(frozen=True)
class PassSummary:
    """What one pass did (event id -> Result), and when the events left scheduled are due again."""

    results: dict[str, Result] = field(default_factory=dict)
    follow_ups: dict[str, datetime] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        counts = {r.value: sum(v is r for v in self.results.values()) for r in Result}
        return {
            **counts,
            "follow_ups": [{"event_id": k, "at": v.isoformat()} for k, v in sorted(self.follow_ups.items())],
        }


# --- pure ---------------------------------------------------------------------------------------------------------


def plan_after(event: ScheduledEvent, result: AttemptResult, now: datetime) -> tuple[EventStatus, datetime | None]:
    """The event's status after an attempt that ended with ``result``, and when the next attempt is due."""
    if result.outcome == "success":
        return EventStatus.DELIVERED, None
    if result.outcome == "failed":  # refused before connecting: retrying the same URL cannot help
        return EventStatus.ERROR, None
    if event.tries >= event.num_retries:  # this attempt was the first plus every retry allowed
        return EventStatus.ERROR, None
    delay = max(float(event.retry_interval_seconds), result.retry_after or 0.0)
    return EventStatus.SCHEDULED, now + timedelta(seconds=delay)


def request_headers(event: ScheduledEvent, secrets: Sequence[str], now: datetime) -> dict[str, str]:
    """Every header of one attempt as sent: the event's own, ours, and the signature made at ``now``."""
    headers = {h.name: h.value.get_secret_value() for h in event.headers}
    headers["content-type"] = "application/json"
    headers["user-agent"] = USER_AGENT
    headers.update(standard_headers(list(secrets), event.id, int(now.timestamp()), event.body.encode("ascii")))
    return headers


def timeout_of(event: ScheduledEvent) -> float:
    """The request timeout: the event's ``timeout_seconds``, never more than 30 s."""
    return min(float(event.timeout_seconds), MAX_TIMEOUT_SECONDS)


# --- I/O ----------------------------------------------------------------------------------------------------------


def deliver_due_events(
    store: Store,
    settings: Settings,
    *,
    now: Clock,
    limit: int = 200,
    event_ids: Sequence[str] | None = None,
) -> PassSummary:
    """One attempt at each due event: ``event_ids`` first, then any other due event (a missed run's), at most
    ``limit`` in all. Raises only if the store cannot even list what is due."""
    check_limit(limit, PASS_LIMIT_MAX)
    named = due_events(store, now=now(), limit=limit, event_ids=event_ids) if event_ids else []
    others = due_events(store, now=now(), limit=limit)
    due = list({e.id: e for e in [*named, *others]}.values())[:limit]
    if not due:
        return PassSummary()
    workers = min(settings.webhook_concurrency, len(due))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bulletin-scheduled-event") as pool:
        outcomes = list(pool.map(lambda e: _deliver_one(store, settings, e, now), due))
    return PassSummary(
        results={e.id: result for e, (result, _) in zip(due, outcomes, strict=True)},
        follow_ups={e.id: at for e, (_, at) in zip(due, outcomes, strict=True) if at is not None},
    )


def _deliver_one(store: Store, settings: Settings, event: ScheduledEvent, now: Clock) -> tuple[Result, datetime | None]:
    try:
        lease = timeout_of(event) + LEASE_MARGIN_SECONDS
        claim = claim_event(store, event.id, lease_seconds=lease, now=now())
        if claim is None:
            return Result.BUSY, None
        if claim.dead:
            logger.warning("scheduled event %s is dead: %s", event.id, claim.event.last_error)
            return Result.DEAD, None
        return _attempt(store, settings, claim, now)
    except BulletinError as error:  # the store failed: this pass's edge; the lease lapses and a later pass retries
        logger.warning("scheduled event %s was not attempted: %s", event.id, error)
        return Result.FAILED_TO_RECORD, None


def _attempt(store: Store, settings: Settings, claim: EventClaim, now: Clock) -> tuple[Result, datetime | None]:
    event = claim.event
    started = now()
    secrets = org_secret(store, event.org, now=started).signing_secrets(started)
    headers = request_headers(event, secrets, started)
    result = send_attempt(
        event.webhook,
        event.body.encode("ascii"),
        headers,
        timeout=timeout_of(event),
        allowed_networks=settings.webhook_allowed_networks,
        https_only=settings.webhook_https_only,
        now=started,
    )
    finished = now()
    status, next_retry_at = plan_after(event, result, finished)
    _, recorded, applied = record_invocation(
        store,
        claim,
        attempted_at=started,
        request_headers=logged_headers(headers),
        status_code=result.status_code,
        response_body=result.response_body,
        duration_ms=result.duration_ms,
        error=result.error,
        status=status,
        next_retry_at=next_retry_at,
        now=finished,
    )
    logger.info(
        "scheduled event %s attempt %d: %s%s in %d ms -> %s",
        event.id,
        event.tries + 1,
        result.outcome,
        "" if result.status_code is None else f" ({result.status_code})",
        result.duration_ms,
        recorded.status.value,
    )
    if not applied:  # the lease lapsed and another dispatcher took over: it decides what comes next
        return Result.BUSY, None
    if status is EventStatus.DELIVERED:
        return Result.DELIVERED, None
    if status is EventStatus.SCHEDULED:
        return Result.RETRYING, next_retry_at
    return Result.ERROR, None


# --- Prefect task -------------------------------------------------------------------------------------------------


@task(name="deliver-due-scheduled-events", cache_policy=NO_CACHE, persist_result=False)
def deliver_due_events_task(
    store: Store, settings: Settings, now: Clock, limit: int, event_ids: list[str] | None
) -> PassSummary:
    """One pass over due scheduled events (``deliver_due_events``)."""
    return deliver_due_events(store, settings, now=now, limit=limit, event_ids=event_ids)
