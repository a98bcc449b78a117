"""The error shape in the OpenAPI document, so clients and schemathesis know every answer a route can give.

Routes declare ``responses=error_responses(401, 404)``: each status gets the one error body the app's exception
handler writes, ``{"error": {"code", "message", "field"?}}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

_DESCRIPTIONS = {
    400: "Malformed request: the field named is wrong",
    401: "No API key (or data token), or one that is unknown, revoked or invalid",
    403: "The key's role does not allow this, or the data token grants no scope for it",
    404: "No such object in the caller's organisation",
    406: "The Accept header asks for a format this route does not produce",
    409: "Conflicts with the current state",
    413: "The request body is over the cap",
    422: "The request is well-formed but cannot be applied",
    503: "A dependency is unavailable; retry later",
}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each with the one error body. 400 and 413 are always in:
    any route can meet a malformed request or an over-large body."""
    wanted = sorted({400, 413, *statuses})
    return {status: {"model": ErrorBody, "description": _DESCRIPTIONS.get(status, "Error")} for status in wanted}
