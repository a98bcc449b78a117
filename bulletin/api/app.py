"""The HTTP app: the webhook receiver, health and readiness, and one place that turns errors into answers.

Every error answer has one shape, ``{"error": {"code", "message", "field"?}}``. A BulletinError answers with its
own ``status_code``; FastAPI's request validation is a 400; anything else is a 500 with a generic message (its
traceback goes to the server log, never to the caller), and bad input must never get there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from bulletin.api import scheduled_events
from bulletin.api.endpoints import router as endpoints_router
from bulletin.api.files import router as files_router
from bulletin.api.hooks import HookService, router
from bulletin.api.housekeeping import Housekeeper
from bulletin.api.job_service import JobService
from bulletin.api.jobs import router as jobs_router
from bulletin.api.middleware import AccessLog, BodyCap
from bulletin.api.preferences import router as preferences_router
from bulletin.api.query import QueryEngine
from bulletin.api.query import router as query_router
from bulletin.api.runs import FlowStarter, check_targets
from bulletin.api.triggers import router as triggers_router
from bulletin.errors import BulletinError
from bulletin.settings import Settings
from bulletin.store import Store, migrate, open_store
from bulletin.triggers import load_triggers

logger = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _code(exc: BulletinError) -> str:
    """``PayloadTooLargeError`` -> ``payload_too_large``: the class names the problem."""
    name = type(exc).__name__.removesuffix("Error") or "bulletin"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _error(status: int, code: str, message: str, field: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse({"error": body}, status_code=status, **extra)


async def error_response(request: Request, exc: Exception) -> JSONResponse:
    """The one exception handler: every error, whatever raised it, answered in the same shape."""
    if isinstance(exc, BulletinError):
        if exc.status_code >= 500:
            logger.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return _error(exc.status_code, _code(exc), exc.message, exc.field, headers=getattr(exc, "headers", None))
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or None
        return _error(400, "bad_request", str(first.get("msg", "invalid request")), where)
    if isinstance(exc, StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), headers=exc.headers)
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return _error(422, "invalid", first["msg"], ".".join(str(p) for p in first["loc"]) or None)
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal", "internal error; the server log has the details")


def _store_ready(store: Store) -> None:
    with store.read() as conn:
        conn.execute(text("SELECT 1"))


def _prefect_ready() -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise problem


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], datetime] | None = None, deployments: bool = True
) -> FastAPI:
    """The app. Triggers are loaded and checked now, so a wrong trigger file stops ``bulletin serve`` at once;
    the state store is opened and migrated, and the run starter made, when the app starts (its lifespan).
    ``deployments=False`` runs every triggered run in this process (``FlowStarter``), never through a deployment."""
    settings = settings or Settings()
    triggers = load_triggers(settings.triggers_dir)
    check_targets(triggers, settings.reports_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await run_in_threadpool(open_store, settings.database)
        starter = FlowStarter(deployments=deployments)
        try:
            await run_in_threadpool(migrate, store)
            app.state.store = store
            app.state.query_engine = QueryEngine(settings)
            app.state.hooks = HookService(
                triggers=triggers,
                store=store,
                starter=starter,
                clock=clock or (lambda: datetime.now(UTC)),
                max_body_bytes=settings.api_max_body_bytes,
            )
            app.state.readiness = {"store": lambda: _store_ready(store), "prefect": _prefect_ready}
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
            yield
        finally:
            if hasattr(app.state, "housekeeper"):
                await run_in_threadpool(app.state.housekeeper.stop)
            if hasattr(app.state, "scheduled_events"):
                await run_in_threadpool(app.state.scheduled_events.close)
            if hasattr(app.state, "query_engine"):
                app.state.query_engine.close()
            await run_in_threadpool(starter.shutdown)
            store.close()

    app = FastAPI(title="Bulletin", lifespan=lifespan, docs_url=None, redoc_url=None)
    for kind in (BulletinError, RequestValidationError, StarletteHTTPException, ValidationError, Exception):
        app.add_exception_handler(kind, error_response)
    app.state.settings = settings
    app.state.clock = clock or (lambda: datetime.now(UTC))
    app.include_router(router)
    for api in (query_router, endpoints_router, triggers_router):
        app.include_router(api)
    app.include_router(scheduled_events.router)
    app.include_router(preferences_router)
    app.include_router(jobs_router)
    app.include_router(files_router)
    app.add_middleware(BodyCap, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(AccessLog)  # added last: outermost, so it times and logs everything, 413s included

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        """The state store and the Prefect API answer (503 naming what does not)."""
        checks: dict[str, str] = {}
        for name, check in request.app.state.readiness.items():
            try:
                await run_in_threadpool(check)
                checks[name] = "ok"
            except Exception as exc:  # readiness reports any failure as "not ready"
                logger.warning("readiness check %s failed: %s", name, type(exc).__name__, exc_info=True)
                checks[name] = "unavailable"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503)

    return app
