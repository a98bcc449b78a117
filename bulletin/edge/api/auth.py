"""API-key authentication for the HTTP API: who is calling, for which organisation, with which role.

Routes take ``p: Principal = Depends(principal)``; admin-only routes take ``Depends(require_admin)`` (or call
``require_admin(p)``), cluster-level ones ``Depends(require_cluster_admin)``. A key is read from
``Authorization: Bearer KEY`` or ``x-api-key: KEY`` (the header QuickSight's API uses). A missing, unknown or revoked
key is a 401 with a ``WWW-Authenticate`` challenge; the key never reaches a log or an error message.

Scoping is the routes' job: an object of another organisation must answer 404 exactly as a missing one does
(``not_found_unless_own``), so a key cannot learn what other organisations have.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.concurrency import run_in_threadpool

from bulletin.clock import Clock, utc_now
from bulletin.errors import ForbiddenError, NotFoundError, RequestError, UnauthorizedError
from bulletin.store import Store
from bulletin.store.api_keys import authenticate

CHALLENGE = 'Bearer realm="bulletin"'
API_KEY_HEADER = "x-api-key"
#: The two ways to send an API key, as the OpenAPI document declares them (``components.securitySchemes``, and
#: either one on every route that takes a key). They only describe: ``presented_key`` does the checking.
API_KEY_BEARER = HTTPBearer(
    scheme_name="ApiKeyBearer", description="An API key: `Authorization: Bearer <key>`.", auto_error=False
)
API_KEY_IN_HEADER = APIKeyHeader(
    name=API_KEY_HEADER, scheme_name="ApiKeyHeader", description="An API key: `x-api-key: <key>`.", auto_error=False
)


@dataclass(frozen=True)
class Principal:
    """The caller, as proved by its API key."""

    key_id: str
    org: str
    role: str
    cluster_admin: bool


def presented_key(request: Request) -> str:
    """The key from ``Authorization: Bearer`` or ``x-api-key``; 401 when absent or not a bearer credential."""
    bearer = request.headers.getlist("authorization")
    plain = request.headers.getlist(API_KEY_HEADER)
    if len(bearer) > 1 or len(plain) > 1:
        raise RequestError("give one API key, in one header", field="authorization")
    if bearer and plain:
        raise RequestError("give the API key in Authorization or in x-api-key, not both", field="authorization")
    if plain:
        key = plain[0].strip()
    elif bearer:
        scheme, _, key = bearer[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            raise UnauthorizedError("the Authorization header must be 'Bearer <API key>'", challenge=CHALLENGE)
        key = key.strip()
    else:
        raise UnauthorizedError(
            "an API key is required: 'Authorization: Bearer <key>' or 'x-api-key: <key>'", challenge=CHALLENGE
        )
    if not key:
        raise UnauthorizedError("the API key is empty", challenge=CHALLENGE)
    return key


async def principal(
    request: Request,
    _bearer: object = Security(API_KEY_BEARER),
    _header: object = Security(API_KEY_IN_HEADER),
) -> Principal:
    """FastAPI dependency: the caller's ``Principal``, or 401. Also left on ``request.state`` for the access log."""
    key = presented_key(request)
    store: Store = request.app.state.store
    found = await run_in_threadpool(authenticate, store, key, now=request_now(request))
    if found is None:
        raise UnauthorizedError(
            "the API key is not valid (unknown or revoked)", challenge=CHALLENGE + ', error="invalid_token"'
        )
    who = Principal(key_id=found.id, org=found.org, role=found.role, cluster_admin=found.cluster_admin)
    request.state.principal = who
    return who


def require_admin(p: Principal = Depends(principal)) -> Principal:
    """The principal if its key is an admin of its organisation, else 403. Usable as a dependency or a call."""
    if p.role != "admin":
        raise ForbiddenError("this needs an admin API key of the organisation")
    return p


def require_cluster_admin(p: Principal = Depends(principal)) -> Principal:
    """The principal if its key is a cluster admin, else 403. Usable as a dependency or a call."""
    if not p.cluster_admin:
        raise ForbiddenError("this needs a cluster-admin API key")
    return p


def not_found_unless_own(p: Principal, owner: str | None, message: str, field: str) -> None:
    """404 when the object belongs to another organisation (or to none). Give the message and field a missing
    object gets, so the two answers are the same and a key cannot tell them apart."""
    if owner is None or owner != p.org:
        raise NotFoundError(message, field=field)


def request_now(request: Request) -> datetime:
    """Now, by the app's clock (``create_app(clock=...)``: tests pin it), or the real one for an app without."""
    clock: Clock | None = getattr(request.app.state, "clock", None)
    return (clock or utc_now)()
