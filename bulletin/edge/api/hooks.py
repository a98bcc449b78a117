"""``POST /v1/hooks/{trigger_id}``: a signed request from dbt Cloud, GitHub, Bulletin itself or any Standard
Webhooks sender starts the trigger's flow run.

The order is the security order, cheapest refusal first:

1. the trigger (404), then the body, read with a hard cap (413): ``Content-Length`` is checked first and the
   stream is cut off past the cap whatever the header said;
2. the signature, on the raw bytes, before anything parses them (401/400); a stale timestamp is refused here; a
   trigger whose secret or public key is not configured cannot verify anything: 503 ``trigger_not_configured``;
3. the payload: UTF-8 JSON object (400), then the trigger's conditions (200 ``ignored`` with the reason);
4. the run's parameters, templated and checked against the flow, and a place to run it (400/503);
5. the message id in the replay store: a replay is acknowledged (200 ``duplicate``) and starts nothing;
6. the run, through Prefect (202 with its id); Prefect unreachable is a 503 with ``Retry-After``, answered within
   seconds (bulletin.edge.api.runs bounds every Prefect call).

The id is recorded only once the run is ready to start (steps 1-4 done), and given back if the run could not be
created, so a request refused for a reason the sender can fix or retry is not remembered as seen. Recording before
starting keeps two concurrent deliveries of one id to one run: the unique key lets one through.
Steps 2-6 are a plain function (``HookService.handle``) run in a worker thread: the signature checks, the store
and the Prefect client are synchronous.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from bulletin.clock import Clock
from bulletin.edge.api.inbound import SCHEME_HEADERS, fold_headers, load_secrets, verify_request
from bulletin.edge.api.openapi import error_responses
from bulletin.edge.api.runs import PREFECT_TIMEOUT_SECONDS, FlowStarter, bounded_prefect, target_for
from bulletin.errors import PayloadTooLargeError, RequestError, TransientError, TriggerNotConfiguredError
from bulletin.store import Store
from bulletin.store.inbound import forget_inbound, record_inbound
from bulletin.triggers import Trigger, action_parameters, conditions_match, get_trigger, webhook_run_key

router = APIRouter()


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: dict[str, Any]


@dataclass
class HookService:
    """What the route needs, built once by the app: the triggers, the state store, the run starter, the clock."""

    triggers: dict[str, Trigger]
    store: Store
    starter: FlowStarter
    clock: Clock
    max_body_bytes: int
    secrets: Callable[[Trigger], list[str]] = field(default=load_secrets)
    prefect_timeout: float = PREFECT_TIMEOUT_SECONDS

    def unconfigured(self) -> list[str]:
        """The triggers whose secret or public key is not configured (their requests are answered 503
        ``trigger_not_configured``), by id. A Secret block that cannot be read now counts as configured: that is
        Prefect's readiness, not the trigger's."""
        missing = []
        for trigger_id, trigger in sorted(self.triggers.items()):
            try:
                with bounded_prefect(self.prefect_timeout):
                    self.secrets(trigger)
            except TriggerNotConfiguredError:
                missing.append(trigger_id)
            except TransientError:
                pass
        return missing

    def handle(self, trigger: Trigger, header_pairs: Iterable[tuple[str, str]], body: bytes) -> Answer:
        """Steps 2-6 of the module docstring, for a body already read within the cap."""
        now = self.clock()
        headers = fold_headers(header_pairs, SCHEME_HEADERS[trigger.verify.scheme])
        with bounded_prefect(self.prefect_timeout):  # a Secret block is read through Prefect
            secrets = self.secrets(trigger)
        inbound = verify_request(trigger, secrets, headers, body, now=now)
        answer = {"trigger": trigger.id, "message_id": inbound.message_id}
        matched, reason = conditions_match(trigger, inbound.payload)
        if not matched:
            return Answer(200, {**answer, "status": "ignored", "reason": reason})
        parameters = action_parameters(trigger, inbound.payload, headers)
        if trigger.action.report is not None:
            parameters.setdefault("run_key", webhook_run_key(trigger.id, inbound.message_id))
        with self.starter.prepare(target_for(trigger.action), parameters) as prepared:
            if not record_inbound(self.store, source=trigger.source, message_id=inbound.message_id, now=now):
                return Answer(200, {**answer, "status": "duplicate"})
            try:
                run_id = self.starter.start(
                    prepared,
                    idempotency_key=f"{trigger.id}:{inbound.message_id}",
                    tags=["webhook", f"trigger:{trigger.id}"],
                )
            finally:
                if not prepared.started:  # no run: the id is given back, so the sender's retry is not a duplicate
                    forget_inbound(self.store, source=trigger.source, message_id=inbound.message_id)
        return Answer(202, {**answer, "status": "started", "flow_run_id": str(run_id)})


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or PayloadTooLargeError as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.getlist("content-length")
    if len(declared) > 1:
        raise RequestError("header 'content-length' appears more than once", field="content-length")
    if declared:
        text = declared[0].strip()
        if not (text.isascii() and text.isdigit()):
            raise RequestError("header 'content-length' is not a number", field="content-length")
        if int(text) > limit:
            raise PayloadTooLargeError(f"the body is larger than {limit} bytes", field="body")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLargeError(f"the body is larger than {limit} bytes", field="body")
    except ClientDisconnect as exc:
        raise RequestError("the client disconnected before sending the whole body", field="body") from exc
    return bytes(body)


@router.post(
    "/v1/hooks/{trigger_id}",
    status_code=202,
    summary="Receive a signed webhook and start its run",
    responses={
        200: {
            "description": "Verified, but nothing started: a replayed message id, or the trigger's conditions did "
            "not match (the reason is in the answer)."
        },
        202: {"description": "Verified and started: the Prefect flow run's id."},
        **error_responses(401, 404, 503),
    },
)
async def receive_hook(trigger_id: str, request: Request) -> JSONResponse:
    """A signed request from dbt Cloud, GitHub, Bulletin itself or any Standard Webhooks sender starts the
    trigger's flow run. The signature is checked on the raw body before anything parses it (401 when it does not
    verify); a replayed message id is acknowledged with 200 and starts nothing. 503 with `Retry-After` when the
    trigger's secret is not configured (`trigger_not_configured`) or Prefect cannot be reached: retry later, the
    message id has not been used up."""
    service: HookService = request.app.state.hooks
    trigger = get_trigger(service.triggers, trigger_id)
    body = await read_body(request, service.max_body_bytes)
    answer = await run_in_threadpool(service.handle, trigger, request.headers.items(), body)
    return JSONResponse(answer.body, status_code=answer.status_code)
