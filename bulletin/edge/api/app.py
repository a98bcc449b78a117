"""The HTTP app: the webhook receiver, health and readiness, and one place that turns errors into answers.

Every error answer has one shape, ``{"error": {"code", "message", "field"?}}``. A BulletinError answers with its
own ``status_code``; FastAPI's request validation is a 400; anything else is a 500 with a generic message (its
traceback goes to the server log, never to the caller), and bad input must never get there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from bulletin.clock import Clock, utc_now
from bulletin.edge.api import scheduled_events
from bulletin.edge.api.docs import add_docs
from bulletin.edge.api.endpoints import router as endpoints_router
from bulletin.edge.api.files import router as files_router
from bulletin.edge.api.foreign_errors import shape_for
from bulletin.edge.api.hooks import HookService, router
from bulletin.edge.api.housekeeping import Housekeeper
from bulletin.edge.api.job_service import JobService
from bulletin.edge.api.jobs import router as jobs_router
from bulletin.edge.api.metadata import router as metadata_router
from bulletin.edge.api.middleware import AccessLog, BodyCap, loggable_path
from bulletin.edge.api.preferences import router as preferences_router
from bulletin.edge.api.query import QueryEngine
from bulletin.edge.api.query import router as query_router
from bulletin.edge.api.recipient_preferences import router as recipient_preferences_router
from bulletin.edge.api.runs import FlowStarter, bounded_prefect, check_targets
from bulletin.edge.api.snapshots import router as snapshots_router
from bulletin.edge.api.thoughtspot import router as thoughtspot_router
from bulletin.edge.api.triggers import router as triggers_router
from bulletin.edge.api.unsubscribe import router as unsubscribe_router
from bulletin.errors import BulletinError
from bulletin.settings import Settings
from bulletin.store import Store, migrate, open_store
from bulletin.triggers import Trigger, load_triggers

logger = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
DESCRIPTION = (
    "Scheduled, row-secure report delivery on Prefect: signed webhooks that start report runs, row-scoped queries "
    "with data tokens, outbound webhook endpoints, Hasura-style one-off scheduled events, QuickSight-style report "
    "jobs and ThoughtSpot-style communication-channel preferences. Errors have one shape: "
    '`{"error": {"code", "message", "field"?}}`.'
)
#: Seconds a 503 asks the caller to wait before retrying: long enough for a restarted Prefect API to answer.
RETRY_AFTER_SECONDS = 5


def _code(exc: BulletinError) -> str:
    """``PayloadTooLargeError`` -> ``payload_too_large``: the class names the problem."""
    name = type(exc).__name__.removesuffix("Error") or "bulletin"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _error(
    status: int, code: str, message: str, field: str | None = None, path: str = "", **extra: Any
) -> JSONResponse:
    shape = shape_for(path)  # a front door answers in the shape of the API it mirrors
    if shape is not None:
        return JSONResponse(shape(status, code, message, field), status_code=status, **extra)
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse({"error": body}, status_code=status, **extra)


async def error_response(request: Request, exc: Exception) -> JSONResponse:
    """The one exception handler: every error, whatever raised it, answered in the same shape."""
    path = request.url.path
    if isinstance(exc, BulletinError):
        if exc.status_code >= 500:
            logger.error("%s %s: %s: %s", request.method, loggable_path(path), type(exc).__name__, exc)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 503:  # a retry may help (TransientError): say when
            headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
        return _error(exc.status_code, _code(exc), exc.message, exc.field, path, headers=headers or None)
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or None
        return _error(400, "bad_request", str(first.get("msg", "invalid request")), where, path)
    if isinstance(exc, StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), path=path, headers=exc.headers)
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return _error(422, "invalid", first["msg"], ".".join(str(p) for p in first["loc"]) or None, path)
    logger.error("%s %s failed", request.method, loggable_path(path), exc_info=exc)
    return _error(500, "internal", "internal error; the server log has the details", path=path)


def _store_ready(store: Store) -> None:
    with store.read() as conn:
        conn.execute(text("SELECT 1"))


def _prefect_ready(timeout: float) -> None:
    from prefect.client.orchestration import get_client

    with bounded_prefect(timeout), get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise problem


def create_app(settings: Settings | None = None, *, clock: Clock | None = None, deployments: bool = True) -> FastAPI:
    """The app. Triggers are loaded and checked now, so a wrong trigger file stops ``bulletin serve`` at once;
    the state store is opened and migrated, and the run starter made, when the app starts (its lifespan).
    ``deployments=False`` runs every triggered run in this process (``FlowStarter``), never through a deployment."""
    settings = settings or Settings()
    triggers = load_triggers(settings.triggers_dir)
    check_targets(triggers, settings.reports_dir)
    app = FastAPI(
        title="Bulletin",
        description=DESCRIPTION,
        lifespan=_lifespan(settings, triggers, clock=clock, deployments=deployments),
        docs_url=None,  # served from local assets by add_docs: the FastAPI defaults load them from a CDN
        redoc_url=None,
    )
    add_docs(app)
    for kind in (BulletinError, RequestValidationError, StarletteHTTPException, ValidationError, Exception):
        app.add_exception_handler(kind, error_response)
    app.state.settings = settings
    app.state.clock = clock or utc_now
    _include_routers(app)
    app.add_middleware(BodyCap, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(AccessLog)  # added last: outermost, so it times and logs everything, 413s included
    app.get("/healthz")(healthz)
    app.get("/readyz")(readyz)
    return app


def _include_routers(app: FastAPI) -> None:
    app.include_router(router)
    for api in (query_router, endpoints_router, triggers_router):
        app.include_router(api)
    app.include_router(scheduled_events.router)
    app.include_router(preferences_router)
    app.include_router(jobs_router)
    app.include_router(files_router)
    app.include_router(unsubscribe_router)
    app.include_router(recipient_preferences_router)
    for front_door in (snapshots_router, thoughtspot_router, metadata_router):  # other APIs' shapes, same services
        app.include_router(front_door)


def _lifespan(
    settings: Settings, triggers: dict[str, Trigger], *, clock: Clock | None, deployments: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """What the app does when it starts and stops: the store and the run starter, then the services on them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await run_in_threadpool(open_store, settings.database)
        starter = FlowStarter(prefect_timeout=settings.api_prefect_timeout_seconds, deployments=deployments)
        try:
            await run_in_threadpool(migrate, store)
            await _start_services(app, settings, triggers, store, starter, clock=clock, deployments=deployments)
            yield
        finally:
            await _stop_services(app, store, starter)

    return lifespan


async def _start_services(
    app: FastAPI,
    settings: Settings,
    triggers: dict[str, Trigger],
    store: Store,
    starter: FlowStarter,
    *,
    clock: Clock | None,
    deployments: bool,
) -> None:
    app.state.store = store
    app.state.query_engine = QueryEngine(settings)
    app.state.hooks = HookService(
        triggers=triggers,
        store=store,
        starter=starter,
        clock=clock or utc_now,
        max_body_bytes=settings.api_max_body_bytes,
        prefect_timeout=settings.api_prefect_timeout_seconds,
    )
    app.state.readiness = {
        "store": lambda: _store_ready(store),
        "prefect": lambda: _prefect_ready(settings.api_prefect_timeout_seconds),
    }
    for trigger_id in await run_in_threadpool(app.state.hooks.unconfigured):
        logger.warning("trigger %r is not configured: its hooks are answered 503 until it is", trigger_id)
    if settings.public_url is None:
        # A choice, not a fault (a demo or an API that sends no email): said at start, `bulletin serve` prints it too.
        logger.info("BULLETIN_PUBLIC_URL is not set: emails carry no unsubscribe link (List-Unsubscribe)")
    app.state.jobs = JobService(
        store=store,
        settings=settings,
        starter=starter,
        engine=app.state.query_engine,
        clock=app.state.clock,
    )
    app.state.scheduled_events = await run_in_threadpool(
        scheduled_events.ScheduledEventService.start, settings, store, app.state.clock
    )
    if deployments:  # housekeeping runs go through deployments, so never from the demo (bulletin serve's)
        app.state.housekeeper = Housekeeper(store, clock=app.state.clock)
        app.state.housekeeper.start()


async def _stop_services(app: FastAPI, store: Store, starter: FlowStarter) -> None:
    """Stop what ``_start_services`` started, whatever part of it ran."""
    if hasattr(app.state, "housekeeper"):
        await run_in_threadpool(app.state.housekeeper.stop)
    if hasattr(app.state, "scheduled_events"):
        await run_in_threadpool(app.state.scheduled_events.close)
    if hasattr(app.state, "query_engine"):
        app.state.query_engine.close()
    await run_in_threadpool(starter.shutdown)
    store.close()


async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


async def readyz(request: Request) -> JSONResponse:
    """The state store and the Prefect API answer (503 naming what does not). Triggers whose secret or public
    key is not configured are listed and make the status ``degraded``, still 200: the rest of the API, and
    every other trigger, serve as usual, and waiting would not fix them (docs/api.md, "Readiness")."""
    checks: dict[str, str] = {}
    for name, check in request.app.state.readiness.items():
        try:
            await run_in_threadpool(check)
            checks[name] = "ok"
        except Exception as exc:  # readiness reports any failure as "not ready"
            # One line per probe (a load balancer probes often); the traceback only at DEBUG.
            logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            logger.debug("readiness check %s failed", name, exc_info=True)
            checks[name] = "unavailable"
    ready = all(v == "ok" for v in checks.values())
    unconfigured = await run_in_threadpool(request.app.state.hooks.unconfigured)
    status = "unavailable" if not ready else "degraded" if unconfigured else "ok"
    body = {"status": status, "checks": checks, "triggers_not_configured": unconfigured}
    return JSONResponse(body, 200 if ready else 503)
