"""One-click unsubscribe (RFC 8058) over HTTP: the link every email carries in ``List-Unsubscribe`` and its footer.

* ``POST /v1/unsubscribe/{token}`` (no API key: the signed token is the credential) stops the token's report's
  email to the token's recipient (``unsubscribe_email``: a preference for that report without ``EMAIL``) and
  answers 200, again and again: a mail client may send it twice. The body a client sends
  (``List-Unsubscribe=One-Click``) is not required.
* ``GET`` on the same URL changes nothing: mail scanners follow links in mail. It shows a small page whose button
  POSTs.

A malformed or tampered token is a 400, an expired one a 410: a small page for a browser (``Accept: text/html``),
else the API's JSON error. The token is never logged: the access log and the error log write the route as
``/v1/unsubscribe/<token>``; the pages are ``no-store`` and send no referrer.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from markupsafe import escape
from starlette.concurrency import run_in_threadpool

from bulletin.edge.api.auth import request_now
from bulletin.edge.api.openapi import error_responses
from bulletin.edge.api.query import QueryEngine
from bulletin.errors import BulletinError, GoneError, RequestError
from bulletin.settings import Settings
from bulletin.store import Store
from bulletin.store.recipient_preferences import unsubscribe_email
from bulletin.unsubscribe import Unsubscribe, verify_token
from tasks.email.unsubscribe import unsubscribe_keys

router = APIRouter(prefix="/v1/unsubscribe", tags=["unsubscribe"])

#: Who changed a preference through a link (the ``updated_by`` of API changes is the key's id).
BY_LINK = "unsubscribe-link"
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title></head>
<body style="font-family: Arial, Helvetica, sans-serif; color: #333333; max-width: 520px; margin: 40px auto;">
<h1 style="font-size: 20px;">{title}</h1>
{body}
</body></html>
"""
_UNSUBSCRIBE = "Unsubscribe from this report"


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), body=body), status_code=status, headers=_HEADERS)


def _grant(request: Request, token: str) -> Unsubscribe:
    settings: Settings = request.app.state.settings
    engine: QueryEngine = request.app.state.query_engine
    keyset = None if settings.unsubscribe_secret is not None else engine.keyset()
    return verify_token(unsubscribe_keys(settings, keyset), token, now=request_now(request))


def _refused(request: Request, exc: BulletinError) -> Response:
    """A bad or expired link: a small page for a browser, else the API's JSON error."""
    if "text/html" in request.headers.get("accept", ""):
        return _page("This link does not work", f"<p>{escape(exc.message)}</p>", exc.status_code)
    body = {"error": {"code": "gone" if exc.status_code == 410 else "bad_request", "message": exc.message}}
    return JSONResponse(body, status_code=exc.status_code, headers=_HEADERS)


@router.get(
    "/{token}",
    response_class=HTMLResponse,
    responses=error_responses(410),
    summary="The unsubscribe confirmation page",
)
async def confirm_page(token: str, request: Request) -> Response:
    """A small page naming the report, with a button that POSTs to this URL. Changes nothing: mail scanners and
    link previews follow GET links, and must not unsubscribe anyone."""
    try:
        grant = _grant(request, token)
    except (RequestError, GoneError) as exc:
        return _refused(request, exc)
    body = (
        f"<p>Stop receiving <strong>{escape(grant.report_id)}</strong> by email?</p>"
        '<form method="post" action="">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        f'<button type="submit" style="font-size: 16px; padding: 8px 16px;">{_UNSUBSCRIBE}</button></form>'
    )
    return _page(_UNSUBSCRIBE, body)


@router.post("/{token}", responses=error_responses(410), summary="One-click unsubscribe (RFC 8058)")
async def unsubscribe(token: str, request: Request) -> Response:
    """Stop this report's email to the link's recipient: their preference for the report loses ``EMAIL`` (their
    other channels stay as they were). No API key: the signed token is the credential. 200 every time, also when
    repeated. JSON ``{"status": "unsubscribed", "report_id"}``, or a small page for a browser's form post."""
    try:
        grant = _grant(request, token)
    except (RequestError, GoneError) as exc:
        return _refused(request, exc)
    store: Store = request.app.state.store
    now = request_now(request)
    await run_in_threadpool(
        lambda: unsubscribe_email(
            store,
            org=grant.org,
            recipient=grant.recipient,
            report_id=grant.report_id,
            updated_by=BY_LINK,
            now=now,
        )
    )
    if "text/html" in request.headers.get("accept", ""):
        return _page(
            "Unsubscribed", f"<p>You will no longer receive <strong>{escape(grant.report_id)}</strong> by email.</p>"
        )
    return JSONResponse({"status": "unsubscribed", "report_id": grant.report_id}, headers=_HEADERS)
