"""Error answers of the front doors, in the shape of the API each one mirrors, so a copied client reads them.

Bulletin's own routes answer ``{"error": {"code", "message", "field"?}}``. Under a front door's path the app's one
exception handler (``bulletin.edge.api.app.error_response``) asks ``shape_for(path)`` and writes the same error,
status and headers in that API's shape instead:

* QuickSight-style snapshot jobs (``/qs-anonymous-snapshot``): ``{"error": message, "field"?}``, as the sample API
  answers ``{"error": "dashboardId parameter required"}``;
* Hasura-style metadata (``/v1/metadata``): ``{"path": "$.args.<field>", "error": message, "code"}`` with Hasura's
  codes (``parse-failed``, ``not-found``, ``access-denied``, ...).

The ThoughtSpot-style preference routes keep Bulletin's shape: ThoughtSpot's documentation shows none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

Shaper = Callable[[int, str, str, "str | None"], dict[str, Any]]

#: Hasura's error codes by HTTP status (its QErr codes); Bulletin's code is kept where Hasura has no match.
_HASURA_CODES = {
    400: "parse-failed",
    401: "access-denied",
    403: "access-denied",
    404: "not-found",
    409: "unexpected",
    413: "parse-failed",
    422: "validation-failed",
}


_ENVELOPE = frozenset({"type", "args", "version", "resource_version"})


def _in_body(field: str | None) -> str | None:
    """A request-validation field (``body.dashboardId``) as the caller wrote it (``dashboardId``)."""
    if field is None or field == "body":
        return None
    return field.removeprefix("body.")


def quicksight_error(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message}
    field = _in_body(field)
    if field is not None:
        body["field"] = field
    return body


def hasura_error(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    """Hasura's ``{path, error, code}``; a field of the metadata call's ``args`` is a path under ``$.args``."""
    field = _in_body(field)
    if field is None:
        path = "$"
    elif field.split(".")[0] in _ENVELOPE:
        path = f"$.{field}"
    else:
        path = f"$.args.{field}"
    return {"path": path, "error": message, "code": _HASURA_CODES.get(status, code.replace("_", "-"))}


_SHAPES: tuple[tuple[str, Shaper], ...] = (
    ("/qs-anonymous-snapshot", quicksight_error),
    ("/v1/metadata", hasura_error),
)


def shape_for(path: str) -> Shaper | None:
    """The error shape of the front door serving ``path``; None for Bulletin's own routes."""
    for prefix, shaper in _SHAPES:
        if path == prefix or path.startswith(prefix + "/"):
            return shaper
    return None


class QuickSightError(BaseModel):
    """A QuickSight-style snapshot route's error."""

    model_config = ConfigDict(extra="forbid")

    error: str
    field: str | None = None


class HasuraError(BaseModel):
    """A Hasura-style metadata call's error."""

    model_config = ConfigDict(extra="forbid")

    path: str
    error: str
    code: str


def foreign_error_responses(model: type[BaseModel], *statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a front door's error statuses, each with its API's error body (400 and 413
    always: any request can be malformed or too large)."""
    wanted = sorted({400, 413, *statuses})
    return {status: {"model": model, "description": f"Error ({status})"} for status in wanted}
