"""Two ASGI middlewares around every route: the structured access log and the request body cap.

``AccessLog`` writes one JSON object per request to the ``bulletin.api.access`` logger: method, path (never the
query string: a caller may have put a credential there), status, duration in ms, the client address, and the
organisation and key id once a route has authenticated the caller. It never reads a header, so neither
``Authorization`` nor ``x-api-key`` nor a data token can reach it. The same fields are on the record's
``access`` attribute for structured handlers.

``BodyCap`` refuses a body over ``max_bytes`` with 413 before any route reads it: a ``Content-Length`` over the cap
is answered at once, and a body streamed without one is cut off as soon as it passes the cap (the route then
answers 413 through the app's error handler). Both are pure ASGI (no ``BaseHTTPMiddleware``), so streamed
answers pass through untouched.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bulletin.edge.api.foreign_errors import shape_for

access_logger = logging.getLogger("bulletin.api.access")


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        started = time.perf_counter()
        status = 500  # an exception that escapes every handler is answered 500 by the outermost middleware

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            fields = access_fields(scope, state, status, time.perf_counter() - started)
            access_logger.info("%s", json.dumps(fields, separators=(",", ":")), extra={"access": fields})


#: Routes whose last segment is a credential (an unsubscribe token): logged as ``<token>``.
_SECRET_SEGMENT_ROUTES = ("/v1/unsubscribe/",)


def loggable_path(path: str | None) -> str | None:
    """``path`` as a log may show it: a credential in it replaced by ``<token>``."""
    for prefix in _SECRET_SEGMENT_ROUTES:
        if path is not None and path.startswith(prefix):
            return prefix + "<token>"
    return path


def access_fields(scope: Scope, state: dict[str, Any], status: int, seconds: float) -> dict[str, Any]:
    """What one access log line says: nothing taken from a header or the query string."""
    who = state.get("principal")
    client = scope.get("client")
    return {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "method": scope.get("method"),
        "path": loggable_path(scope.get("path")),
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
        "client": client[0] if client else None,
        "org": getattr(who, "org", None),
        "key_id": getattr(who, "key_id", None),
    }


class BodyCap:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [v for k, v in scope.get("headers", []) if k == b"content-length"]
        if len(declared) == 1 and declared[0].strip().isdigit() and int(declared[0]) > self.max_bytes:
            await _too_large(self.max_bytes, scope.get("path", ""))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, f"the body is larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, counted, send)


def _too_large(limit: int, path: str) -> JSONResponse:
    message = f"the body is larger than {limit} bytes"
    shape = shape_for(path)  # a front door answers in the shape of the API it mirrors
    body = {"error": {"code": "payload_too_large", "message": message, "field": "body"}}
    answer = body if shape is None else shape(413, "payload_too_large", message, None)
    return JSONResponse(answer, status_code=413, headers={"connection": "close"})
