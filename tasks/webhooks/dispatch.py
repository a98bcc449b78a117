"""Send due webhook messages: claim, sign afresh, send once, record, and decide what comes next.

One pass of ``dispatch_due`` makes at most one attempt per due message, ``settings.webhook_concurrency`` at a time.
Retries are not slept on here: a failed attempt puts its message back to pending with ``next_attempt_at`` (the
retry schedule with full jitter, or the receiver's Retry-After when longer), and a later pass (the deliver-webhooks
flow, started when a message is due) picks it up. So a slow receiver never holds a report run, and a crash loses
nothing: a claim's lease runs out and the next pass takes the message over.

Every attempt carries the message's own id in ``webhook-id`` and a fresh timestamp and signature, one per active
secret (two while a secret rotates). Outcomes: 2xx delivers; 410 disables the endpoint and fails the message; an
attempt refused before connecting (SSRF guard) fails the message; anything else is retried until the schedule is
spent, then the message stays failed, ready for ``redeliver``. An endpoint failing without a break for longer than
``settings.webhook_disable_after_seconds`` is disabled, and the other enabled endpoints get ``endpoint.disabled``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from bulletin.clock import Clock
from bulletin.errors import BulletinError, ConfigError, NotFoundError
from bulletin.settings import Settings
from bulletin.store.base import check_limit
from bulletin.store.db import Store
from bulletin.store.webhooks import (
    Endpoint,
    Message,
    MessageClaim,
    MessageStatus,
    claim_message,
    disable_endpoint,
    due_messages,
    enqueue,
    list_endpoints,
    record_attempt,
    signing_secrets,
)
from tasks.webhooks.events import endpoint_disabled_event
from tasks.webhooks.send import AttemptResult, dbt_headers, next_attempt_delay, retry_delays, send_attempt
from tasks.webhooks.signing import standard_headers

logger = logging.getLogger(__name__)

#: A claim must outlast the request and the write that records it (which may queue behind other writers).
LEASE_MARGIN_SECONDS = 90.0
DISPATCH_LIMIT_MAX = 10_000


class Result(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"
    #: Another dispatcher holds it, or it stopped being due: nothing sent.
    BUSY = "busy"
    #: Not started before the deadline: left due for the next pass.
    DEFERRED = "deferred"
    #: The store failed around the attempt; the lease runs out and a later pass retries.
    ERROR = "error"
    #: The endpoint was removed, with its messages, while the request was in flight: nothing left to record.
    REMOVED = "removed"


@dataclass(frozen=True)
class DispatchSummary:
    """What one pass did, message by message (``results``: message id -> Result)."""

    results: dict[str, Result] = field(default_factory=dict)
    disabled_endpoints: tuple[str, ...] = ()

    def count(self, result: Result) -> int:
        return sum(r is result for r in self.results.values())

    def as_dict(self) -> dict[str, Any]:
        counts: dict[str, Any] = {r.value: self.count(r) for r in Result}
        return {"attempted": self.attempted, **counts, "disabled_endpoints": list(self.disabled_endpoints)}

    @property
    def attempted(self) -> int:
        return sum(r in {Result.DELIVERED, Result.RETRYING, Result.FAILED} for r in self.results.values())


@dataclass(frozen=True)
class _Outcome:
    result: Result
    disabled: str | None = None


def plan_next(
    result: AttemptResult, *, attempt_number: int, schedule: Sequence[float], rng: random.Random, now: datetime
) -> tuple[MessageStatus, datetime | None]:
    """The message's next state after attempt ``attempt_number`` (0-based) ended with ``result``."""
    if result.outcome == "success":
        return MessageStatus.DELIVERED, None
    if result.outcome != "retry":  # gone (410) or refused before connecting: retrying cannot help
        return MessageStatus.FAILED, None
    # next_attempt_delay counts attempts from 1: the one after 0-based attempt n is attempt n + 2.
    delay = next_attempt_delay(attempt_number + 2, schedule, rng)
    if delay is None:
        return MessageStatus.FAILED, None
    return MessageStatus.PENDING, now + timedelta(seconds=max(delay, result.retry_after or 0.0))


def attempt_headers(endpoint: Endpoint, message: Message, now: datetime) -> dict[str, str]:
    """The headers of one attempt: signed at ``now`` with every active secret, plus dbt's when asked for.

    ``send_attempt`` adds the content type and user agent.
    """
    body = message.body
    headers = standard_headers(signing_secrets(endpoint, now), message.id, int(now.timestamp()), body)
    if endpoint.style == "dbt":
        headers.update(dbt_headers(endpoint.secret.get_secret_value(), body))
    return headers


def dispatch_due(
    store: Store,
    settings: Settings,
    *,
    now: Clock,
    rng: random.Random,
    limit: int = 500,
    message_ids: Sequence[str] | None = None,
    deadline_seconds: float | None = None,
) -> DispatchSummary:
    """One attempt at each due message (at most ``limit``; only ``message_ids`` when given).

    With ``deadline_seconds``, messages not started by then are left due for the next pass (requests in flight
    finish within the timeout). Raises only if the store cannot even list what is due.
    """
    check_limit(limit, DISPATCH_LIMIT_MAX)
    retry_delays(settings.webhook_retry_schedule)  # a bad schedule must fail here, not after a send
    due = due_messages(store, now=now(), limit=limit, message_ids=message_ids)
    if not due:
        return DispatchSummary()
    deadline = None if deadline_seconds is None else time.monotonic() + deadline_seconds
    workers = min(settings.webhook_concurrency, len(due))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bulletin-webhook") as pool:
        outcomes = list(pool.map(lambda m: _dispatch_one(store, settings, m, now, rng, deadline), due))
    return DispatchSummary(
        results={m.id: o.result for m, o in zip(due, outcomes, strict=True)},
        disabled_endpoints=tuple(o.disabled for o in outcomes if o.disabled),
    )


def _dispatch_one(
    store: Store, settings: Settings, message: Message, now: Clock, rng: random.Random, deadline: float | None
) -> _Outcome:
    if deadline is not None and time.monotonic() > deadline:
        return _Outcome(Result.DEFERRED)
    try:
        lease = settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS
        claim = claim_message(store, message.id, lease_seconds=lease, now=now())
        if claim is None:
            return _Outcome(Result.BUSY)
        return _attempt(store, settings, claim, now, rng)
    except NotFoundError:  # removed on purpose (`bulletin webhooks remove`): not a fault
        logger.info("webhook message %s: its endpoint was removed during the attempt", message.id)
        return _Outcome(Result.REMOVED)
    except BulletinError as error:  # the store failed: this pass's edge; the lease lapses and a later pass retries
        logger.warning("webhook message %s was not attempted: %s", message.id, error)
        return _Outcome(Result.ERROR)


def _attempt(store: Store, settings: Settings, claim: MessageClaim, now: Clock, rng: random.Random) -> _Outcome:
    endpoint, message = claim.endpoint, claim.message
    started = now()
    try:
        headers = attempt_headers(endpoint, message, started)
    except ConfigError as error:  # a stored secret that cannot sign: no attempt can ever succeed
        result = AttemptResult(
            status_code=None, duration_ms=0, response_body="", error=str(error), outcome="failed", retry_after=None
        )
    else:
        result = send_attempt(
            endpoint.url,
            message.body,
            headers,
            timeout=settings.webhook_timeout_seconds,
            allowed_networks=settings.webhook_allowed_networks,
            https_only=settings.webhook_https_only,
            now=started,
        )
    finished = now()
    status, next_at = plan_next(
        result,
        attempt_number=claim.attempt_number,
        schedule=settings.webhook_retry_schedule,
        rng=rng,
        now=finished,
    )
    recorded = record_attempt(
        store,
        claim,
        attempted_at=started,
        status_code=result.status_code,
        duration_ms=result.duration_ms,
        response_body=result.response_body,
        error=result.error,
        outcome=result.outcome,
        message_status=status,
        next_attempt_at=next_at,
        now=finished,
    )
    # Ids and outcomes only: the URL may carry a subscriber's credentials, the body a presigned link.
    logger.info(
        "webhook %s (%s) to %s: %s%s in %d ms",
        message.id,
        message.event_type,
        endpoint.id,
        result.outcome,
        "" if result.status_code is None else f" ({result.status_code})",
        result.duration_ms,
    )
    disabled = _disable_if_due(store, settings, recorded.endpoint, result, finished)
    if status is MessageStatus.DELIVERED:
        return _Outcome(Result.DELIVERED)
    # Disabling fails the endpoint's pending messages, this one included.
    return _Outcome(Result.RETRYING if status is MessageStatus.PENDING and not disabled else Result.FAILED, disabled)


def _disable_if_due(
    store: Store, settings: Settings, endpoint: Endpoint, result: AttemptResult, now: datetime
) -> str | None:
    """Disable on 410 Gone, or when failing for longer than the window; then tell the other endpoints."""
    if result.outcome == "success" or not endpoint.enabled:
        return None
    window = timedelta(seconds=settings.webhook_disable_after_seconds)
    if result.outcome == "gone":
        reason = "the endpoint answered 410 Gone"
    elif endpoint.failing_since is not None and now - endpoint.failing_since > window:
        reason = f"failing without a break since {endpoint.failing_since:%Y-%m-%d %H:%M:%S} UTC"
    else:
        return None
    if not disable_endpoint(store, endpoint.id, reason=reason, now=now):
        return None  # another dispatcher disabled it first, and announced it
    logger.warning("webhook endpoint %s disabled: %s", endpoint.id, reason)
    others = [e.id for e in list_endpoints(store) if e.enabled and e.id != endpoint.id and e.hears_from(endpoint.org)]
    if others:
        event_type, data = endpoint_disabled_event(
            endpoint_id=endpoint.id,
            description=endpoint.description,
            reason=reason,
            failing_since=endpoint.failing_since,
            disabled_at=now,
        )
        enqueue(store, event_type=event_type, payload=data, now=now, endpoint_ids=others)
    return endpoint.id
