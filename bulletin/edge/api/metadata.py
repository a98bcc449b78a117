"""Hasura-style scheduled events through Hasura's metadata envelope: ``POST /v1/metadata`` ``{"type", "args"}``.

Four commands, each one call of ``ScheduledEventService`` (``bulletin.edge.api.scheduled_events``), the service behind
``/v1/scheduled-events``, so an event made here is the same event there:

* ``create_scheduled_event`` ``{webhook, schedule_at, payload?, headers?, retry_conf?, comment?}`` ->
  ``{"message": "success", "event_id"}`` (``POST /v1/scheduled-events``);
* ``delete_scheduled_event`` ``{type: "one_off", event_id}`` -> ``{"message": "success"}``: the event is cancelled
  (``DELETE /v1/scheduled-events/{id}``: kept, as ``cancelled``, with its logs);
* ``get_scheduled_events`` ``{type: "one_off", limit?, offset?, get_rows_count?, status?}`` -> ``{events, count?}``;
* ``get_scheduled_event_invocations`` ``{type: "one_off", event_id, limit?, offset?, get_rows_count?}`` ->
  ``{invocations, count?}``.

Events and answers in Hasura's field names (``scheduled_time``, ``webhook_conf``, ``header_conf`` with values masked).
Cron triggers are not Bulletin's (its schedules are report definitions): ``type: "cron"`` is a 400. Any other
``type`` is a 400 as Hasura answers an unknown command; every error is Hasura's ``{path, error, code}``
(``bulletin.edge.api.foreign_errors``). Hasura's older ``/v1/query`` path is Bulletin's query engine, not this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from bulletin.edge.api.auth import Principal, principal
from bulletin.edge.api.foreign_errors import HasuraError, foreign_error_responses
from bulletin.edge.api.scheduled_events import ScheduledEventService, ScheduleEvent
from bulletin.errors import RequestError
from bulletin.store.scheduled_event_schema import EventStatus

router = APIRouter(tags=["Hasura-style scheduled events"])

#: The furthest ``offset + limit`` reaches: events are read page by page up to it.
WINDOW_MAX = 10_000
PAGE = 200
COMMANDS = (
    "create_scheduled_event",
    "delete_scheduled_event",
    "get_scheduled_events",
    "get_scheduled_event_invocations",
)
#: Hasura's statuses; ``locked`` (being sent) is ``scheduled`` in Bulletin, so it matches nothing on its own.
HasuraStatus = Literal["scheduled", "locked", "delivered", "error", "dead", "cancelled"]


class MetadataCall(BaseModel):
    """Hasura's metadata envelope."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=100, description=f"One of {', '.join(COMMANDS)}.")
    args: dict[str, Any] = Field(default_factory=dict, description="The command's arguments.")
    version: int | None = Field(default=None, description="Accepted and ignored (Hasura's metadata API version).")
    resource_version: int | None = Field(default=None, description="Accepted and ignored.")


class OneOff(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["one_off", "cron"] = Field(description="one_off (cron triggers are not Bulletin's).")


class DeleteArgs(OneOff):
    event_id: str = Field(min_length=1, max_length=64)


class Window(OneOff):
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=WINDOW_MAX)
    get_rows_count: bool = False


class EventsArgs(Window):
    status: list[HasuraStatus] | None = Field(default=None, max_length=6)


class InvocationsArgs(Window):
    event_id: str = Field(min_length=1, max_length=64, description="Bulletin needs the event's id.")


def _args(model: type[BaseModel], args: dict[str, Any]) -> Any:
    """``args`` checked by ``model``; the first problem as a 400 naming its field under ``$.args``."""
    try:
        parsed = model.model_validate(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RequestError(str(first["msg"]), field=".".join(["args", *(str(p) for p in first["loc"])])) from exc
    if getattr(parsed, "type", "one_off") == "cron":
        raise RequestError(
            "cron triggers are not supported: Bulletin's schedules are report definitions", field="args.type"
        )
    return parsed


def hasura_event(event: dict[str, Any]) -> dict[str, Any]:
    """An event as ``/v1/scheduled-events`` shows it, in Hasura's names."""
    return {
        "id": event["event_id"],
        "webhook_conf": event["webhook"],
        "scheduled_time": event["schedule_at"],
        "payload": event["payload"],
        "retry_conf": event["retry_conf"],
        "header_conf": event["headers"],
        "status": event["status"],
        "tries": event["tries"],
        "created_at": event["created_at"],
        "next_retry_at": event["next_retry_at"],
        "comment": event["comment"],
    }


def hasura_invocation(event_id: str, invocation: dict[str, Any]) -> dict[str, Any]:
    ok = invocation["status_code"] is not None and 200 <= invocation["status_code"] < 300
    return {
        "id": f"{event_id}-{invocation['attempt']}",
        "event_id": event_id,
        "status": invocation["status_code"],
        "request": {"headers": invocation["request_headers"]},
        "response": {"body": invocation["response_body"], "error": invocation["error"], "ok": ok},
        "created_at": invocation["attempted_at"],
    }


def _create(service: ScheduledEventService, who: Principal, args: dict[str, Any]) -> dict[str, Any]:
    return {"message": "success", "event_id": service.create(who, _args(ScheduleEvent, args))}


def _delete(service: ScheduledEventService, who: Principal, args: dict[str, Any]) -> dict[str, Any]:
    service.cancel(who, _args(DeleteArgs, args).event_id)
    return {"message": "success"}


def _events(service: ScheduledEventService, who: Principal, args: dict[str, Any]) -> dict[str, Any]:
    """Hasura's offset window over Bulletin's keyset pages (newest first), read until it is full."""
    wanted: EventsArgs = _args(EventsArgs, args)
    statuses = None if wanted.status is None else {s for s in wanted.status if s != "locked"}
    if statuses is not None and not statuses:
        return {"events": [], **({"count": 0} if wanted.get_rows_count else {})}
    found: list[dict[str, Any]] = []
    token = None
    reach = WINDOW_MAX if wanted.get_rows_count else wanted.offset + wanted.limit
    while len(found) < reach:
        page = service.page(who, None, PAGE, token)
        found += [e for e in page["events"] if statuses is None or EventStatus(e["status"]).value in statuses]
        token = page["next_page_token"]
        if token is None:
            break
    answer: dict[str, Any] = {"events": [hasura_event(e) for e in found[wanted.offset : wanted.offset + wanted.limit]]}
    if wanted.get_rows_count:
        answer["count"] = len(found)
    return answer


def _invocations(service: ScheduledEventService, who: Principal, args: dict[str, Any]) -> dict[str, Any]:
    wanted: InvocationsArgs = _args(InvocationsArgs, args)
    logs = service.detail(who, wanted.event_id)["invocations"]
    newest = list(reversed(logs))
    answer: dict[str, Any] = {
        "invocations": [hasura_invocation(wanted.event_id, i) for i in newest[wanted.offset :][: wanted.limit]]
    }
    if wanted.get_rows_count:
        answer["count"] = len(logs)
    return answer


_COMMANDS: dict[str, Callable[[ScheduledEventService, Principal, dict[str, Any]], dict[str, Any]]] = {
    "create_scheduled_event": _create,
    "delete_scheduled_event": _delete,
    "get_scheduled_events": _events,
    "get_scheduled_event_invocations": _invocations,
}


@router.post("/v1/metadata", responses=foreign_error_responses(HasuraError, 401, 404, 409, 503))
async def metadata(call: MetadataCall, request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    """Hasura's metadata API for one-off scheduled events (`/v1/scheduled-events` underneath):
    `create_scheduled_event`, `delete_scheduled_event`, `get_scheduled_events`, `get_scheduled_event_invocations`.
    Another `type` is a 400 in Hasura's error shape, `{path, error, code}`."""
    command = _COMMANDS.get(call.type)
    if command is None:
        raise RequestError(f'unknown metadata command "{call.type[:100]}"; Bulletin serves {", ".join(COMMANDS)}')
    service: ScheduledEventService = request.app.state.scheduled_events
    return await run_in_threadpool(command, service, who, call.args)
