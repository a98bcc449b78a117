"""One-off scheduled webhook events over HTTP (Hasura-style), scoped to the caller's organisation.

* ``POST /v1/scheduled-events`` ``{webhook, schedule_at, payload, headers: [{name, value}], retry_conf, comment}``
  -> 201 ``{event_id}``. The URL passes the SSRF guard now (and again at every send: DNS changes); a host that
  does not resolve yet is accepted, and a send that cannot resolve it is logged and retried. ``schedule_at``
  is ISO 8601 with a time zone. The event is stored, then its Prefect flow run is scheduled for its time; if Prefect
  cannot take it, the event is removed again and the answer is 503, so a refused request leaves nothing behind.
* ``GET /v1/scheduled-events?status=&limit=&page_token=`` -> ``{events, next_page_token}``, newest first, keyset
  paginated (an opaque token). ``status`` is one of the five, or ``pending`` (scheduled) / ``processed``
  (delivered, error, dead).
* ``GET /v1/scheduled-events/{id}`` -> the event with its invocation logs.
* ``DELETE /v1/scheduled-events/{id}`` -> 204 for a pending event (and for one already cancelled); 409 once it is
  processed or while it is being sent.
* ``GET /v1/scheduled-events/signing-secret`` and ``POST .../signing-secret/rotate`` (admin keys): the
  organisation's ``whsec_`` secret that signs its events (Standard Webhooks), rotated with an overlap.

Header values are never shown: answers and invocation logs carry ``********`` instead. Another organisation's event
answers 404 exactly as a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from bulletin.clock import Clock
from bulletin.edge.api.auth import Principal, principal, require_admin
from bulletin.edge.api.paging import encode_page_token, read_page_token
from bulletin.edge.api.scheduled_runs import ScheduledRunner
from bulletin.errors import BulletinError, RequestError, UnsafeTargetError
from bulletin.settings import Settings
from bulletin.store import Store
from bulletin.store.scheduled_event_schema import COMMENT_MAX, HEADERS_MAX
from bulletin.store.scheduled_events import (
    MASK,
    PROCESSED,
    EventStatus,
    HeaderIn,
    Invocation,
    OrgSecret,
    RetryConf,
    ScheduledEvent,
    cancel_event,
    create_event,
    cursor_of,
    delete_event,
    get_event,
    invocations,
    list_events,
    org_secret,
    rotate_org_secret,
    set_flow_run,
)
from bulletin.store.webhook_schema import URL_MAX
from tasks.webhooks import check_url_at_registration

router = APIRouter(prefix="/v1/scheduled-events", tags=["scheduled events"])

#: How far ahead (or back: a past time is sent at once, or is dead past its tolerance) ``schedule_at`` may be.
SCHEDULE_RANGE = timedelta(days=366)
StatusFilter = Literal["scheduled", "delivered", "error", "dead", "cancelled", "pending", "processed"]
_GROUPS: dict[str, tuple[EventStatus, ...]] = {"pending": (EventStatus.SCHEDULED,), "processed": PROCESSED}


# --- request and answer shapes -----------------------------------------------------------------------------------


class ScheduleEvent(BaseModel):
    """Hasura's ``create_scheduled_event`` arguments."""

    model_config = ConfigDict(extra="forbid")

    webhook: str = Field(min_length=1, max_length=URL_MAX, description="The http(s) URL to POST to.")
    schedule_at: AwareDatetime = Field(description="When to send: ISO 8601 with a time zone.")
    payload: Any = Field(default=None, description="Any JSON; sent as the body's `payload`.")
    headers: list[HeaderIn] = Field(default_factory=list, max_length=HEADERS_MAX, description="Extra headers.")
    retry_conf: RetryConf = Field(default_factory=RetryConf)
    comment: str | None = Field(default=None, max_length=COMMENT_MAX)

    @field_validator("schedule_at", mode="before")
    @classmethod
    def _iso_text(cls, value: object) -> object:
        # ISO 8601 text only: pydantic alone would also take Unix timestamps, as numbers or digit strings.
        if isinstance(value, str) and len(value) <= 64:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                pass
            else:
                if parsed.tzinfo is not None:
                    return parsed
        raise ValueError("schedule_at must be ISO 8601 text with a time zone, e.g. 2026-12-01T09:00:00Z")


class Created(BaseModel):
    event_id: str


class HeaderShown(BaseModel):
    name: str
    value: str = Field(description="Always masked.")


class InvocationShown(BaseModel):
    attempt: int
    attempted_at: datetime
    request_headers: list[HeaderShown]
    status_code: int | None
    response_body: str | None = Field(description="The first 4 KB of the answer.")
    duration_ms: int
    error: str | None


class EventShown(BaseModel):
    event_id: str
    webhook: str
    schedule_at: datetime
    payload: Any
    headers: list[HeaderShown]
    retry_conf: RetryConf
    comment: str | None
    status: EventStatus
    tries: int
    next_retry_at: datetime | None
    last_error: str | None
    flow_run_id: str | None
    created_at: datetime
    updated_at: datetime
    processed_at: datetime | None


class EventDetail(EventShown):
    invocations: list[InvocationShown]


class EventPage(BaseModel):
    events: list[EventShown]
    next_page_token: str | None


class SigningSecret(BaseModel):
    secret: str = Field(description="The whsec_ secret that signs this organisation's scheduled events.")
    previous_secret_expires_at: datetime | None = Field(
        description="Until then, the previous secret also signs (two signatures in webhook-signature)."
    )


def shown(event: ScheduledEvent) -> dict[str, Any]:
    return {
        "event_id": event.id,
        "webhook": event.webhook,
        "schedule_at": event.schedule_at,
        "payload": event.payload,
        "headers": [{"name": h.name, "value": MASK} for h in event.headers],
        "retry_conf": event.retry_conf,
        "comment": event.comment,
        "status": event.status,
        "tries": event.tries,
        "next_retry_at": event.next_retry_at,
        "last_error": event.last_error,
        "flow_run_id": event.flow_run_id,
        "created_at": event.created_at,
        "updated_at": event.updated_at,
        "processed_at": event.processed_at,
    }


def shown_invocation(invocation: Invocation) -> dict[str, Any]:
    return invocation.model_dump(include=set(InvocationShown.model_fields))


# --- the service: plain functions over the store and the runner, run in a worker thread ----------------------------


@dataclass
class ScheduledEventService:
    store: Store
    settings: Settings
    runner: ScheduledRunner
    clock: Clock

    @classmethod
    def start(cls, settings: Settings, store: Store, clock: Clock) -> ScheduledEventService:
        runner = ScheduledRunner(store, clock=clock, sweep_seconds=settings.scheduled_events_sweep_seconds)
        runner.start()
        return cls(store=store, settings=settings, runner=runner, clock=clock)

    def close(self) -> None:
        self.runner.shutdown()

    def create(self, who: Principal, request: ScheduleEvent) -> str:
        now = self.clock()
        self._check_webhook(request.webhook)
        if abs(request.schedule_at - now) > SCHEDULE_RANGE:
            raise RequestError("schedule_at must be within a year of now", field="schedule_at")
        event = create_event(
            self.store,
            org=who.org,
            webhook=request.webhook,
            schedule_at=request.schedule_at,
            payload=request.payload,
            headers=request.headers,
            retry_conf=request.retry_conf,
            comment=request.comment,
            now=now,
        )
        try:
            run_id = self.runner.schedule(event.id, max(event.schedule_at, now))
        except BulletinError:
            delete_event(self.store, event.id)  # no run, no event: the caller retries the whole request
            raise
        set_flow_run(self.store, event.id, str(run_id), now=self.clock())
        return event.id

    def _check_webhook(self, url: str) -> None:
        # A host that does not resolve now is accepted (as Hasura does): the send checks it again and logs a failure.
        try:
            check_url_at_registration(
                url,
                allowed_networks=self.settings.webhook_allowed_networks,
                https_only=self.settings.webhook_https_only,
            )
        except UnsafeTargetError as exc:
            raise UnsafeTargetError(exc.message, field="webhook") from exc

    def page(self, who: Principal, status: str | None, limit: int, token: str | None) -> dict[str, Any]:
        statuses = None if status is None else _GROUPS.get(status) or (EventStatus(status),)
        after = None if token is None else read_page_token(token)
        found = list_events(self.store, org=who.org, statuses=statuses, limit=limit + 1, after=after)
        more = len(found) > limit
        events = found[:limit]
        return {
            "events": [shown(e) for e in events],
            "next_page_token": encode_page_token(cursor_of(events[-1])) if more else None,
        }

    def detail(self, who: Principal, event_id: str) -> dict[str, Any]:
        event = get_event(self.store, event_id, org=who.org)
        return {**shown(event), "invocations": [shown_invocation(i) for i in invocations(self.store, event.id)]}

    def cancel(self, who: Principal, event_id: str) -> None:
        before = get_event(self.store, event_id, org=who.org)
        event = cancel_event(self.store, event_id, org=who.org, now=self.clock())
        if before.status is EventStatus.SCHEDULED and event.flow_run_id is not None:
            self.runner.cancel(UUID(event.flow_run_id))

    def secret(self, who: Principal) -> dict[str, Any]:
        return _secret_shown(org_secret(self.store, who.org, now=self.clock()), self.clock())

    def rotate(self, who: Principal) -> dict[str, Any]:
        grace = self.settings.webhook_secret_grace_seconds
        now = self.clock()
        return _secret_shown(rotate_org_secret(self.store, who.org, grace_seconds=grace, now=now), now)


def _secret_shown(found: OrgSecret, now: datetime) -> dict[str, Any]:
    expires = found.previous_secret_expires_at
    return {
        "secret": found.secret.get_secret_value(),
        "previous_secret_expires_at": expires if expires is not None and expires > now else None,
    }


def _service(request: Request) -> ScheduledEventService:
    service: ScheduledEventService = request.app.state.scheduled_events
    return service


# --- routes (the static paths before /{event_id}) ----------------------------------------------------------------


@router.post("", status_code=201, response_model=Created)
async def schedule_event(body: ScheduleEvent, request: Request, who: Principal = Depends(principal)) -> Created:
    """Schedule a one-off webhook event (as Hasura's `create_scheduled_event`)."""
    event_id = await run_in_threadpool(_service(request).create, who, body)
    return Created(event_id=event_id)


@router.get("", response_model=EventPage)
async def list_scheduled_events(
    request: Request,
    who: Principal = Depends(principal),
    status: StatusFilter | None = Query(default=None, description="One status, or pending / processed."),
    limit: int = Query(default=50, ge=1, le=200),
    page_token: str | None = Query(default=None, max_length=512, description="next_page_token of the last page."),
) -> dict[str, Any]:
    """Pending and processed events, newest first."""
    return await run_in_threadpool(_service(request).page, who, status, limit, page_token)


@router.get("/signing-secret", response_model=SigningSecret)
async def read_signing_secret(request: Request, who: Principal = Depends(require_admin)) -> dict[str, Any]:
    """The organisation's signing secret (made on first use). Admin keys only."""
    return await run_in_threadpool(_service(request).secret, who)


@router.post("/signing-secret/rotate", response_model=SigningSecret)
async def rotate_signing_secret(request: Request, who: Principal = Depends(require_admin)) -> dict[str, Any]:
    """A new signing secret; the previous one keeps signing beside it for BULLETIN_WEBHOOK_SECRET_GRACE_SECONDS."""
    return await run_in_threadpool(_service(request).rotate, who)


@router.get("/{event_id}", response_model=EventDetail)
async def read_scheduled_event(event_id: str, request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    """One event with its invocation logs."""
    return await run_in_threadpool(_service(request).detail, who, event_id)


@router.delete("/{event_id}", status_code=204)
async def cancel_scheduled_event(event_id: str, request: Request, who: Principal = Depends(principal)) -> Response:
    """Cancel a pending event (409 once it is processed)."""
    await run_in_threadpool(_service(request).cancel, who, event_id)
    return Response(status_code=204)
