"""One person's channel preferences over HTTP: ``/v1/recipients/{ref}/preferences``.

* ``GET`` -> ``{recipient, org, preferences: [{report_id, channels, updated_at, updated_by}]}``: the person's own
  levels, ``report_id`` null for every report. Any key of the organisation.
* ``PUT`` ``{report_id?, channels}`` sets one level (``channels: []``: the person receives nothing); an admin key.
  This is how an organisation re-subscribes someone who used an unsubscribe link: a ``PUT`` with ``EMAIL`` back
  for that report, or a ``DELETE`` of that report's level.
* ``DELETE`` (``?report_id=``: that report's level only; absent: every level of the person); an admin key.

The levels, most specific first: the person's for one report, theirs for every report, the organisation's, the
cluster's (bulletin/store/recipient_preferences.py). A recipient is a ref in the audience of some report of the
key's organisation; anyone else, another organisation's recipient included, is a 404 that reads exactly like an
unknown ref.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from bulletin.edge.api.auth import Principal, principal, request_now, require_admin
from bulletin.edge.api.openapi import error_responses
from bulletin.edge.api.query import QueryEngine
from bulletin.errors import NotFoundError, RequestError
from bulletin.models import IDENTIFIER_PATTERN
from bulletin.reports import get_report, load_reports
from bulletin.settings import Settings
from bulletin.store import Store
from bulletin.store import recipient_preferences as rp
from bulletin.store.channel_preferences import Channel
from tasks.audience import find_recipients, resolve_audience

router = APIRouter(prefix="/v1/recipients", tags=["preferences"])

Ref = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, description="The recipient's ref in the report audiences.")]
ReportId = Annotated[str, Field(pattern=IDENTIFIER_PATTERN, description="A report id.")]


class PreferenceIn(BaseModel):
    """One level of the person's preferences."""

    model_config = ConfigDict(extra="forbid")

    report_id: ReportId | None = Field(
        default=None, description="The report this level is for; absent or null: every report."
    )
    channels: list[Channel] = Field(
        max_length=10,
        description="The channels reports reach the person by: any of EMAIL, WEBHOOK, S3, SFTP (each once; "
        "repeats are merged). Empty: the person receives nothing.",
    )


class PreferenceOut(BaseModel):
    report_id: str | None = Field(description="The report; null: every report.")
    channels: list[Channel]
    updated_at: datetime
    updated_by: str | None = Field(description="The API key id, or unsubscribe-link.")


class RecipientPreferencesOut(BaseModel):
    recipient: str
    org: str
    preferences: list[PreferenceOut] = Field(description="The person's own levels, every report's first.")


def _recipient_org(request: Request, org: str, ref: str, known: set[str] | None = None) -> str:
    """``org`` when ``ref`` is in the audience of one of its reports (``known``: those refs, read already), else a
    404."""
    if known is None:
        settings: Settings = request.app.state.settings
        engine: QueryEngine = request.app.state.query_engine
        found = find_recipients(load_reports(settings.reports_dir).values(), engine.warehouse(), ref)
        known = {r.ref for r in found if r.org == org}
    if ref not in known:
        raise NotFoundError(f"no recipient {ref!r} in your organisation's report audiences", field="ref")
    return org


def _audience_refs(request: Request, org: str) -> set[str]:
    """Every ref of ``org`` in the report audiences, read once for a search naming several people."""
    settings: Settings = request.app.state.settings
    engine: QueryEngine = request.app.state.query_engine
    warehouse = engine.warehouse()
    reports = load_reports(settings.reports_dir).values()
    return {r.ref for report in reports for r in resolve_audience(report, warehouse) if r.org == org}


def _answer(store: Store, org: str, ref: str) -> RecipientPreferencesOut:
    levels = rp.list_preferences(store, org=org, recipient=ref)
    return RecipientPreferencesOut(
        recipient=ref,
        org=org,
        preferences=[
            PreferenceOut(
                report_id=p.report_id, channels=list(p.channels), updated_at=p.updated_at, updated_by=p.updated_by
            )
            for p in levels
        ],
    )


def people_preferences(request: Request, org: str, refs: list[str]) -> list[RecipientPreferencesOut]:
    """The own levels of each of ``refs`` (of ``org``'s audiences; any other is a 404): the search's answer."""
    store: Store = request.app.state.store
    known = _audience_refs(request, org)
    return [_answer(store, _recipient_org(request, org, ref, known), ref) for ref in refs]


@router.get("/{ref}/preferences", response_model=RecipientPreferencesOut, responses=error_responses(401, 404))
async def get_preferences(ref: Ref, request: Request, p: Principal = Depends(principal)) -> RecipientPreferencesOut:
    """The person's own preference levels (for every report, and per report). A ref outside the key's
    organisation is a 404."""
    store: Store = request.app.state.store

    def work() -> RecipientPreferencesOut:
        return _answer(store, _recipient_org(request, p.org, ref), ref)

    return await run_in_threadpool(work)


@router.put("/{ref}/preferences", response_model=RecipientPreferencesOut, responses=error_responses(401, 403, 404))
async def put_preference(
    ref: Ref, body: PreferenceIn, request: Request, p: Principal = Depends(require_admin)
) -> RecipientPreferencesOut:
    """Set one level: the person's channels for ``report_id`` (absent: every report). It wins over the
    organisation's and the cluster's; the per-report level wins over the every-report one. Re-subscribes a person
    who unsubscribed when ``EMAIL`` is listed. Answers the person's levels after the change."""
    store: Store = request.app.state.store
    settings: Settings = request.app.state.settings
    now = request_now(request)

    def work() -> RecipientPreferencesOut:
        org = _recipient_org(request, p.org, ref)
        if body.report_id is not None:
            try:
                get_report(settings.reports_dir, body.report_id)
            except NotFoundError as exc:
                raise RequestError(f"no report {body.report_id!r}", field="report_id") from exc
        rp.set_preference(
            store,
            org=org,
            recipient=ref,
            report_id=body.report_id,
            channels=body.channels,
            updated_by=p.key_id,
            now=now,
        )
        return _answer(store, org, ref)

    return await run_in_threadpool(work)


@router.delete("/{ref}/preferences", response_model=RecipientPreferencesOut, responses=error_responses(401, 403, 404))
async def delete_preferences(
    ref: Ref,
    request: Request,
    report_id: Annotated[
        str | None,
        Query(pattern=IDENTIFIER_PATTERN, description="Only this report's level. Absent: every level of the person."),
    ] = None,
    p: Principal = Depends(require_admin),
) -> RecipientPreferencesOut:
    """Remove the person's level for ``report_id``, or all of theirs: the next level (theirs for every report,
    the organisation's, the cluster's) applies again. Removing what is not there is not an error. Answers the
    person's levels after the change."""
    store: Store = request.app.state.store

    def work() -> RecipientPreferencesOut:
        org = _recipient_org(request, p.org, ref)
        rp.clear_preferences(store, org=org, recipient=ref, report_id=report_id)
        return _answer(store, org, ref)

    return await run_in_threadpool(work)
