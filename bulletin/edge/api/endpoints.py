"""Webhook endpoints and their messages over HTTP, for the API keys of the endpoint's organisation.

The same store functions as ``bulletin webhooks`` (``bulletin.store.webhooks``), scoped by the endpoint's ``org``:
another organisation's endpoint or message (and an endpoint made by the CLI, which has no organisation) is a 404,
the same answer as a missing one. Reading needs any key of the organisation; changing needs an admin key.
Secrets are in the answer of a create or a rotation only, never in a listing.

``POST .../redeliver`` puts a finished message back in the queue, due now; the deliver-webhooks flow (started by the
API's housekeeper once a message is due, or ``bulletin webhooks dispatch``) makes the attempt. The API's request
handlers never call out.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from bulletin.edge.api.auth import Principal, not_found_unless_own, principal, request_now, require_admin
from bulletin.edge.api.openapi import error_responses
from bulletin.errors import ConfigError, RequestError
from bulletin.settings import Settings
from bulletin.store import Store
from bulletin.store import webhooks as wh
from bulletin.store.webhook_schema import DESCRIPTION_MAX, URL_MAX
from tasks.webhooks import check_url_at_registration

router = APIRouter(tags=["webhooks"])
EndpointId = Annotated[str, Field(min_length=1, max_length=40)]
#: ``bulletin.store.webhooks.EVENT_TYPES`` and ``ALL_EVENTS`` as a type, so the OpenAPI document lists them
#: (a test checks that the two agree).
EventType = Literal["report.delivered", "report.failed", "run.completed", "*"]


class EndpointIn(BaseModel):
    """A new endpoint: the receiver's URL and the events it hears about."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1, max_length=URL_MAX, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#@]+(/\S*)?$",
        description="The receiver's http(s) URL (no credentials in it).",
    )  # fmt: skip
    event_types: list[EventType] = Field(
        min_length=1, max_length=10, description=f"Any of {', '.join(wh.EVENT_TYPES)}, or {wh.ALL_EVENTS} for all."
    )
    secret: str | None = Field(default=None, max_length=200, description="A whsec_ secret. Default: a new one.")
    style: Literal["standard", "dbt"] = Field(default="standard", description="dbt adds dbt Cloud's Authorization.")
    description: str = Field(default="", max_length=DESCRIPTION_MAX)


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: int | None = Field(
        default=None, ge=0, le=30 * 86_400, description="The old secret keeps signing this long. Default: setting."
    )


class EndpointOut(BaseModel):
    """An endpoint as listed: never its secrets."""

    id: str
    url: str
    event_types: list[str]
    style: str
    enabled: bool
    disabled_reason: str | None
    description: str
    failing_since: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, endpoint: wh.Endpoint) -> EndpointOut:
        return cls.model_validate(endpoint.model_dump(exclude={"secret", "previous_secret", "org"}))


class EndpointWithSecret(EndpointOut):
    """An endpoint with its new secret: store it now, it is not shown again."""

    secret: str


class EndpointList(BaseModel):
    endpoints: list[EndpointOut]


class MessageOut(BaseModel):
    id: str
    endpoint_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, message: wh.Message) -> MessageOut:
        return cls.model_validate(message.model_dump(exclude={"payload", "claimed_by", "lease_expires_at"}))


class MessageList(BaseModel):
    messages: list[MessageOut]


class AttemptOut(BaseModel):
    attempted_at: datetime
    status_code: int | None
    duration_ms: int
    outcome: str
    response_body: str | None = Field(description="The first 4 KB of the response.")
    error: str | None


class AttemptList(BaseModel):
    message_id: str
    attempts: list[AttemptOut]


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


@contextmanager
def _bad_input() -> Iterator[None]:
    """The store refuses bad values with ConfigError (exit 2 on the CLI); over HTTP that is the caller's 400."""
    try:
        yield
    except ConfigError as exc:
        raise RequestError(exc.message, field=exc.field) from exc


def _own_endpoint(store: Store, p: Principal, endpoint_id: str) -> wh.Endpoint:
    endpoint = wh.get_endpoint(store, endpoint_id)
    not_found_unless_own(p, endpoint.org, f"no webhook endpoint {endpoint_id[:60]!r}", "endpoint_id")
    return endpoint


def _own_message(store: Store, p: Principal, message_id: str) -> wh.Message:
    message = wh.get_message(store, message_id)
    endpoint = wh.get_endpoint(store, message.endpoint_id)
    not_found_unless_own(p, endpoint.org, f"no webhook message {message_id[:60]!r}", "message_id")
    return message


@router.post(
    "/v1/webhook-endpoints", status_code=201, response_model=EndpointWithSecret, responses=error_responses(401, 403)
)
async def create_endpoint(
    body: EndpointIn, request: Request, p: Principal = Depends(require_admin)
) -> EndpointWithSecret:
    """Add an endpoint for the caller's organisation; the answer holds its secret, shown this once."""
    settings: Settings = request.app.state.settings
    if settings.webhook_https_only and not body.url.lower().startswith("https://"):
        raise RequestError("only https:// webhook URLs are allowed here", field="url")

    def add() -> tuple[wh.Endpoint, str]:
        # Refused now rather than at every send; a name that does not resolve yet is checked at each send.
        check_url_at_registration(
            body.url, allowed_networks=settings.webhook_allowed_networks, https_only=settings.webhook_https_only
        )
        with _bad_input():
            return wh.add_endpoint(
                _store(request),
                url=body.url,
                event_types=body.event_types,
                secret=body.secret,
                style=body.style,
                description=body.description,
                org=p.org,
                now=request_now(request),
            )

    endpoint, secret = await run_in_threadpool(add)
    return EndpointWithSecret(**EndpointOut.of(endpoint).model_dump(), secret=secret)


@router.get("/v1/webhook-endpoints", response_model=EndpointList, responses=error_responses(401))
async def list_endpoints(request: Request, p: Principal = Depends(principal)) -> EndpointList:
    """The caller's organisation's endpoints, oldest first (never their secrets)."""
    found = await run_in_threadpool(wh.list_endpoints, _store(request), org=p.org)
    return EndpointList(endpoints=[EndpointOut.of(e) for e in found])


@router.get("/v1/webhook-endpoints/{endpoint_id}", response_model=EndpointOut, responses=error_responses(401, 404))
async def get_endpoint(endpoint_id: EndpointId, request: Request, p: Principal = Depends(principal)) -> EndpointOut:
    """One endpoint of the caller's organisation."""
    return EndpointOut.of(await run_in_threadpool(_own_endpoint, _store(request), p, endpoint_id))


@router.delete("/v1/webhook-endpoints/{endpoint_id}", status_code=204, responses=error_responses(401, 403, 404))
async def delete_endpoint(endpoint_id: EndpointId, request: Request, p: Principal = Depends(require_admin)) -> Response:
    """Remove an endpoint with its messages and their attempts."""

    def remove() -> None:
        _own_endpoint(_store(request), p, endpoint_id)
        wh.remove_endpoint(_store(request), endpoint_id)

    await run_in_threadpool(remove)
    return Response(status_code=204)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
    response_model=EndpointWithSecret,
    responses=error_responses(401, 403, 404),
)
async def rotate_endpoint_secret(
    endpoint_id: EndpointId, request: Request, body: RotateIn | None = None, p: Principal = Depends(require_admin)
) -> EndpointWithSecret:
    """A new secret (in the answer, shown once); the old one keeps signing beside it for the grace period."""
    settings: Settings = request.app.state.settings
    wanted = body.grace_seconds if body is not None else None
    grace = settings.webhook_secret_grace_seconds if wanted is None else wanted

    def rotate() -> tuple[wh.Endpoint, str]:
        _own_endpoint(_store(request), p, endpoint_id)
        with _bad_input():
            return wh.rotate_secret(_store(request), endpoint_id, grace_seconds=grace, now=request_now(request))

    endpoint, secret = await run_in_threadpool(rotate)
    return EndpointWithSecret(**EndpointOut.of(endpoint).model_dump(), secret=secret)


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}/messages", response_model=MessageList, responses=error_responses(401, 404)
)
async def list_endpoint_messages(
    endpoint_id: EndpointId,
    request: Request,
    status: Literal["pending", "delivering", "delivered", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    p: Principal = Depends(principal),
) -> MessageList:
    """An endpoint's messages, newest first: what was sent (or is due), and how it went (no payloads)."""

    def find() -> list[wh.Message]:
        _own_endpoint(_store(request), p, endpoint_id)
        wanted = None if status is None else wh.MessageStatus(status)
        return wh.list_messages(_store(request), endpoint_id=endpoint_id, status=wanted, limit=limit)

    return MessageList(messages=[MessageOut.of(m) for m in await run_in_threadpool(find)])


@router.get(
    "/v1/webhook-messages/{message_id}/attempts", response_model=AttemptList, responses=error_responses(401, 404)
)
async def list_message_attempts(
    message_id: EndpointId,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    p: Principal = Depends(principal),
) -> AttemptList:
    """Every attempt at one message, newest first: time, status, duration, the first 4 KB of the response."""

    def find() -> list[wh.Attempt]:
        _own_message(_store(request), p, message_id)
        return wh.message_attempts(_store(request), message_id=message_id, limit=limit)

    attempts = await run_in_threadpool(find)
    return AttemptList(message_id=message_id, attempts=[AttemptOut.model_validate(a.model_dump()) for a in attempts])


@router.post(
    "/v1/webhook-messages/{message_id}/redeliver",
    status_code=202,
    response_model=MessageOut,
    responses=error_responses(401, 403, 404, 409),
)
async def redeliver_message(
    message_id: EndpointId, request: Request, p: Principal = Depends(require_admin)
) -> MessageOut:
    """Queue a failed or delivered message again, due now (409 while it is still pending or being delivered)."""

    def requeue() -> wh.Message:
        _own_message(_store(request), p, message_id)
        with _bad_input():
            return wh.redeliver(_store(request), message_id, now=request_now(request))

    return MessageOut.of(await run_in_threadpool(requeue))
