"""Communication-channel preferences over HTTP (ThoughtSpot-style), with ThoughtSpot's request and answer shapes.

* ``POST /v1/preferences/communication-channels/configure``
  ``{cluster_preferences: [{event_type, channels}], org_preferences: [{org_identifier, operation, preferences,
  reset_events}]}`` -> 204. Admin keys only; ``cluster_preferences`` need a cluster-admin key. An organisation's
  key configures its own organisation only: another ``org_identifier`` is a 404, as an unknown one.
  ``operation`` is ``REPLACE`` (the default: set the listed event types' channels) or ``RESET`` (back to the
  cluster's for ``reset_events``, or for every event type when it is absent). All of a request applies, or none.
* ``POST /v1/preferences/communication-channels/search``
  ``{cluster_preferences: [event_type], org_preferences: [{org_identifier, event_types}]}`` (every filter optional)
  -> ``{cluster_preferences: [{event_type, channels}], org_preferences: [{org: {id, name}, preferences}]}``. Any key:
  the cluster's preferences, and its own organisation's (a cluster admin's: every organisation's). An organisation
  without preferences of its own is listed with ``preferences: []``: it inherits the cluster's. With
  ``recipient_preferences: [ref]`` (Bulletin's own route only) the answer also lists those people's own levels
  (``bulletin.edge.api.recipient_preferences``).

Event types ``REPORT_SCHEDULE`` (scheduled deliveries) and ``REPORT_JOB`` (on-demand jobs); channels ``EMAIL``,
``WEBHOOK`` and ``S3``. The delivery flow gives each recipient the report's channels that its organisation's
effective preference keeps (tasks/audience/preferences.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from bulletin.edge.api.auth import Principal, principal, request_now, require_admin
from bulletin.edge.api.openapi import error_responses
from bulletin.edge.api.recipient_preferences import RecipientPreferencesOut, people_preferences
from bulletin.errors import ForbiddenError, RequestError
from bulletin.models import IDENTIFIER_PATTERN
from bulletin.store import Store
from bulletin.store import channel_preferences as cp
from bulletin.store.channel_preferences import Channel, EventType, Operation

router = APIRouter(prefix="/v1/preferences/communication-channels", tags=["preferences"])

#: An organisation's id or name (names are at most 200 characters); no control characters.
OrgIdentifier = Annotated[
    str,
    Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$", description="The organisation's id or name."),
]
#: More entries than event types (or channels) can only repeat one; the bound keeps a hostile body small.
_LIST_MAX = 10
RecipientRef = Annotated[str, Field(pattern=IDENTIFIER_PATTERN, description="A recipient's ref.")]
_ORGS_MAX = 1000


class PreferenceIn(BaseModel):
    """The channels for one event type."""

    model_config = ConfigDict(extra="forbid")

    event_type: EventType = Field(description="REPORT_SCHEDULE (scheduled deliveries) or REPORT_JOB (on-demand jobs).")
    channels: list[Channel] = Field(
        min_length=1,
        max_length=_LIST_MAX,
        description="Any of EMAIL, WEBHOOK, S3, SFTP (each once; repeats are merged).",
    )


class OrgPreferenceIn(BaseModel):
    """One organisation's change."""

    model_config = ConfigDict(extra="forbid")

    org_identifier: OrgIdentifier
    operation: Operation = Field(
        default=Operation.REPLACE,
        description="REPLACE: set the listed event types' channels. RESET: back to the cluster's preferences.",
    )
    preferences: list[PreferenceIn] | None = Field(
        default=None, max_length=_LIST_MAX, description="REPLACE only: the event types to set."
    )
    reset_events: list[EventType] | None = Field(
        default=None, min_length=1, max_length=_LIST_MAX, description="RESET only: the event types to reset (all)."
    )


class ConfigureIn(BaseModel):
    """ThoughtSpot's configure request: cluster defaults, organisation overrides, or both."""

    model_config = ConfigDict(extra="forbid")

    cluster_preferences: list[PreferenceIn] | None = Field(
        default=None, max_length=_LIST_MAX, description="Defaults for every organisation (cluster-admin keys)."
    )
    org_preferences: list[OrgPreferenceIn] | None = Field(
        default=None, max_length=_ORGS_MAX, description="Per-organisation overrides; they win over the cluster's."
    )


class OrgFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    org_identifier: OrgIdentifier
    event_types: list[EventType] | None = Field(default=None, max_length=_LIST_MAX, description="Default: all.")


class SearchIn(BaseModel):
    """ThoughtSpot's search filters; each is optional (absent: everything the key may see)."""

    model_config = ConfigDict(extra="forbid")

    cluster_preferences: list[EventType] | None = Field(
        default=None, max_length=_LIST_MAX, description="Only the cluster's preferences for these event types."
    )
    org_preferences: list[OrgFilter] | None = Field(
        default=None, max_length=_ORGS_MAX, description="Only these organisations (and event types)."
    )
    recipient_preferences: list[RecipientRef] | None = Field(
        default=None,
        max_length=_ORGS_MAX,
        description="Also these people's own levels (refs in your organisation's report audiences; another "
        "organisation's is a 404). The answer has recipient_preferences only when this is given.",
    )


class PreferenceOut(BaseModel):
    event_type: EventType
    channels: list[Channel]


class OrgOut(BaseModel):
    id: str
    name: str


class OrgPreferencesOut(BaseModel):
    org: OrgOut
    preferences: list[PreferenceOut]


class SearchOut(BaseModel):
    cluster_preferences: list[PreferenceOut]
    org_preferences: list[OrgPreferencesOut]
    recipient_preferences: list[RecipientPreferencesOut] | None = Field(
        default=None, description="The people named in the search's recipient_preferences: their own levels."
    )


def _out(prefs: cp.Preferences) -> list[PreferenceOut]:
    return [PreferenceOut(event_type=e, channels=list(c)) for e, c in prefs.items()]


def _changes(body: ConfigureIn) -> list[cp.OrgChange]:
    changes = []
    for i, entry in enumerate(body.org_preferences or []):
        pairs = [(x.event_type, x.channels) for x in entry.preferences or []]
        changes.append(
            cp.OrgChange(
                org_identifier=entry.org_identifier,
                operation=entry.operation,
                preferences=cp.preference_map(pairs, f"org_preferences.{i}.preferences"),
                reset_events=None if entry.reset_events is None else tuple(entry.reset_events),
            )
        )
    return changes


@router.post("/configure", status_code=204, responses=error_responses(401, 403, 404))
async def configure_channels(body: ConfigureIn, request: Request, p: Principal = Depends(require_admin)) -> Response:
    """Set communication-channel preferences: the cluster's (cluster-admin keys) and organisations' (admin keys,
    their own organisation). Answers 204; a request refused for any reason changes nothing."""
    if not body.cluster_preferences and not body.org_preferences:
        raise RequestError("give cluster_preferences, org_preferences or both", field="cluster_preferences")
    cluster = None
    if body.cluster_preferences:
        if not p.cluster_admin:
            raise ForbiddenError("cluster_preferences need a cluster-admin API key", field="cluster_preferences")
        pairs = [(x.event_type, x.channels) for x in body.cluster_preferences]
        cluster = cp.preference_map(pairs, "cluster_preferences")
    changes = _changes(body)
    store: Store = request.app.state.store
    await run_in_threadpool(
        lambda: cp.configure(
            store,
            cluster=cluster,
            orgs=changes,
            only_org=None if p.cluster_admin else p.org,
            updated_by=p.key_id,
            now=request_now(request),
        )
    )
    return Response(status_code=204)


@router.post(
    "/search", response_model=SearchOut, response_model_exclude_unset=True, responses=error_responses(401, 404)
)
async def search_channels(
    request: Request, body: SearchIn | None = None, p: Principal = Depends(principal)
) -> SearchOut:
    """The cluster's preferences and organisations' own, as far as the key may see: its own organisation's, or
    every organisation's for a cluster-admin key. Naming an organisation the key may not see is a 404."""
    body = body or SearchIn()
    orgs = None
    if body.org_preferences is not None:
        orgs = [(f.org_identifier, f.event_types) for f in body.org_preferences]
    store: Store = request.app.state.store
    found = await run_in_threadpool(
        lambda: cp.search(
            store, cluster_events=body.cluster_preferences, orgs=orgs, only_org=None if p.cluster_admin else p.org
        )
    )
    answer = SearchOut(
        cluster_preferences=_out(found.cluster),
        org_preferences=[
            OrgPreferencesOut(org=OrgOut(id=o.id, name=o.name), preferences=_out(o.preferences)) for o in found.orgs
        ],
    )
    if body.recipient_preferences is not None:
        refs = list(dict.fromkeys(body.recipient_preferences))
        answer.recipient_preferences = await run_in_threadpool(lambda: people_preferences(request, p.org, refs))
    return answer
