"""ThoughtSpot-style communication-channel preferences at ThoughtSpot's own paths, over Bulletin's preference routes.

* ``POST /api/rest/2.0/system/preferences/communication-channels/configure`` -> 204
* ``POST /api/rest/2.0/system/preferences/communication-channels/search`` -> ``{cluster_preferences, org_preferences}``

Their bodies are ThoughtSpot's, and so are Bulletin's ``/v1/preferences/communication-channels/...``: each route here
translates the event type and calls that route's function (``bulletin.edge.api.preferences``), so the checks, the
keys it needs (admin; cluster-admin for ``cluster_preferences``) and the stored preferences are the same.
ThoughtSpot's ``LIVEBOARD_SCHEDULE`` is Bulletin's ``REPORT_SCHEDULE`` (a report's scheduled delivery, as a
Liveboard's): accepted in requests and written so in answers. ``REPORT_JOB`` (on-demand jobs) is Bulletin's own.
ThoughtSpot sends ``Authorization: Bearer <token>``: give a Bulletin API key there (or in ``x-api-key``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from bulletin.edge.api import preferences as own
from bulletin.edge.api.auth import Principal, principal, require_admin
from bulletin.edge.api.openapi import error_responses
from bulletin.store.channel_preferences import Channel, EventType, Operation

router = APIRouter(
    prefix="/api/rest/2.0/system/preferences/communication-channels", tags=["ThoughtSpot-style preferences"]
)

LIVEBOARD_SCHEDULE = "LIVEBOARD_SCHEDULE"
ThoughtSpotEvent = Literal["LIVEBOARD_SCHEDULE", "REPORT_SCHEDULE", "REPORT_JOB"]
_LIST_MAX = 10
_ORGS_MAX = 1000
_EVENT_DOC = "LIVEBOARD_SCHEDULE (= REPORT_SCHEDULE: scheduled reports) or REPORT_JOB (on-demand jobs)."


def to_bulletin(event_type: str) -> str:
    return EventType.REPORT_SCHEDULE.value if event_type == LIVEBOARD_SCHEDULE else event_type


def to_thoughtspot(event_type: str) -> str:
    return LIVEBOARD_SCHEDULE if event_type == EventType.REPORT_SCHEDULE.value else event_type


class PreferenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_type: ThoughtSpotEvent = Field(description=_EVENT_DOC)
    channels: list[Channel] = Field(min_length=1, max_length=_LIST_MAX, description="Any of EMAIL, WEBHOOK, S3, SFTP.")


class OrgPreferenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    org_identifier: own.OrgIdentifier
    operation: Operation = Field(default=Operation.REPLACE, description="REPLACE (the default) or RESET.")
    preferences: list[PreferenceIn] | None = Field(default=None, max_length=_LIST_MAX)
    reset_events: list[ThoughtSpotEvent] | None = Field(default=None, min_length=1, max_length=_LIST_MAX)


class ConfigureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster_preferences: list[PreferenceIn] | None = Field(default=None, max_length=_LIST_MAX)
    org_preferences: list[OrgPreferenceIn] | None = Field(default=None, max_length=_ORGS_MAX)


class OrgFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    org_identifier: own.OrgIdentifier
    event_types: list[ThoughtSpotEvent] | None = Field(default=None, max_length=_LIST_MAX)


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster_preferences: list[ThoughtSpotEvent] | None = Field(default=None, max_length=_LIST_MAX)
    org_preferences: list[OrgFilter] | None = Field(default=None, max_length=_ORGS_MAX)


class PreferenceOut(BaseModel):
    event_type: str = Field(description=_EVENT_DOC)
    channels: list[Channel]


class OrgPreferencesOut(BaseModel):
    org: own.OrgOut
    preferences: list[PreferenceOut]


class SearchOut(BaseModel):
    cluster_preferences: list[PreferenceOut]
    org_preferences: list[OrgPreferencesOut]


def _translated(value: Any, translate: Any) -> Any:
    """``value`` with every event type (``event_type``, ``event_types``, ``reset_events``, the cluster filter's
    items) passed through ``translate``."""
    if isinstance(value, list):
        return [translate(v) if isinstance(v, str) else _translated(v, translate) for v in value]
    if isinstance(value, dict):
        return {
            k: translate(v) if k == "event_type" else _translated(v, translate) if isinstance(v, list | dict) else v
            for k, v in value.items()
        }
    return value


@router.post("/configure", status_code=204, responses=error_responses(401, 403, 404))
async def configure_communication_channels(
    body: ConfigureIn, request: Request, p: Principal = Depends(require_admin)
) -> Response:
    """ThoughtSpot's configure (`POST /v1/preferences/communication-channels/configure` underneath): cluster
    defaults (cluster-admin keys) and organisation overrides (admin keys, their own organisation). 204; a refused
    request changes nothing."""
    converted = own.ConfigureIn.model_validate(_translated(body.model_dump(exclude_none=True), to_bulletin))
    return await own.configure_channels(converted, request, p)


@router.post("/search", response_model=SearchOut, responses=error_responses(401, 404))
async def search_communication_channels(
    request: Request, body: SearchIn | None = None, p: Principal = Depends(principal)
) -> dict[str, Any]:
    """ThoughtSpot's search (`POST /v1/preferences/communication-channels/search` underneath): the cluster's
    preferences and the organisations' the key may see, scheduled reports as LIVEBOARD_SCHEDULE."""
    converted = None
    if body is not None:
        converted = own.SearchIn.model_validate(_translated(body.model_dump(exclude_none=True), to_bulletin))
    found = await own.search_channels(request, converted, p)
    answer: dict[str, Any] = _translated(found.model_dump(mode="json"), to_thoughtspot)
    return answer
