"""QuickSight-style snapshot jobs: the routes of AWS's sample snapshot API, as a front door over Bulletin's jobs.

An integrator who copied the sample's client (base URL ``.../qs-anonymous-snapshot``, an ``x-api-key`` header) points
it at Bulletin's ``/qs-anonymous-snapshot`` and it works unchanged:

* ``POST /qs-anonymous-snapshot`` ``{dashboardId, sheetId, format, parameters, visualId?, bucketConfiguration?}``
  -> 202 ``{SnapshotJobId, DashboardId, Status}``;
* ``GET /qs-anonymous-snapshot?dashboardId=&nextToken=`` -> ``{Items, Count, nextToken}``;
* ``GET .../describe_job/{dashboardId}/{jobId}``, ``.../describe_job_result/{dashboardId}/{jobId}``,
  ``.../download_output/{dashboardId}/{jobId}`` (``{presignedUrl, expiresAt, files}``);
* ``DELETE .../{dashboardId}/{jobId}`` -> 204 (admin keys, as ``DELETE /v1/jobs/{job_id}``).

Every route is one call of ``JobService`` (``bulletin.edge.api.job_service``), the service behind ``/v1/jobs``: the
same checks, the same job, the same files, visible through either door. The mapping is in
``bulletin.edge.api.snapshot_shapes``. Errors have the sample's shape, ``{"error": message}`` (plus ``field``):
``bulletin.edge.api.foreign_errors``. A ``dashboardId`` that is not the job's report answers 404 as a missing job.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bulletin.edge.api import snapshot_shapes as shapes
from bulletin.edge.api.auth import Principal, principal, require_admin
from bulletin.edge.api.foreign_errors import QuickSightError, foreign_error_responses
from bulletin.edge.api.job_service import PREFIX_MAX, JobService, check_prefix
from bulletin.edge.api.paging import encode_page_token, read_page_token
from bulletin.errors import NotFoundError, RequestError
from bulletin.reports import get_report

router = APIRouter(prefix="/qs-anonymous-snapshot", tags=["QuickSight-style snapshot jobs"])
#: Files ``download_output`` links at once without ``?recipient=``.
LINKS_MAX = 100
_FIELDS = {"report_id": "dashboardId", "formats": "format", "output.prefix": "bucketConfiguration.BucketPrefix"}
_ERRORS = foreign_error_responses(QuickSightError, 401, 403, 404, 409, 503)


class SnapshotSubmitted(BaseModel):
    SnapshotJobId: str
    DashboardId: str
    Status: str = Field(description="SUBMITTED (or QUEUED, as the sample's queue names a held job).")


class SnapshotLink(BaseModel):
    recipient: str
    format: str
    presignedUrl: str
    expiresAt: str


class SnapshotDownload(BaseModel):
    presignedUrl: str = Field(description="The first file's link (the only one for a single recipient).")
    expiresAt: str
    files: list[SnapshotLink] = Field(description="A link per recipient and format of the caller's organisation.")


def _service(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


def _table(service: JobService, report_id: str) -> str | None:
    """The report's one table (its dataset), or None for a report no longer defined."""
    try:
        return str(get_report(service.settings.reports_dir, report_id).dataset)
    except NotFoundError:
        return None


def _own_job(service: JobService, who: Principal, dashboard_id: str, job_id: str) -> dict[str, Any]:
    """The job as ``/v1/jobs/{id}`` shows it, if it is of this dashboard; else 404, as a missing job."""
    job = service.describe(who, job_id)
    if job["report_id"] != dashboard_id:
        raise NotFoundError(f"no job {job_id[:64]!r} of dashboard {dashboard_id[:128]!r}", field="jobId")
    return job


def _submit(service: JobService, who: Principal, body: shapes.SnapshotRequest) -> dict[str, Any]:
    table = _table(service, body.dashboardId)
    if table is None:
        raise RequestError(f"no dashboard (report) {body.dashboardId[:128]!r}", field="dashboardId")
    shapes.check_sheet(body, table)
    wanted = shapes.job_request(body)
    if "output" in wanted:
        try:
            check_prefix(wanted["output"]["prefix"])
        except RequestError as exc:
            raise RequestError(
                f"bucketConfiguration.BucketPrefix must be at most {PREFIX_MAX} bytes of segments of letters, "
                "digits, '.', '_' and '-' joined by '/' (no '..', no leading '/', no backslash)",
                field="bucketConfiguration.BucketPrefix",
            ) from exc
    try:
        job, _status, _created = service.submit(who, wanted)
    except RequestError as exc:  # the jobs service names its own fields: give the caller's names
        field = _FIELDS.get(exc.field or "", exc.field)
        raise RequestError(exc.message, field=field) from exc
    return {"SnapshotJobId": job.job_id, "DashboardId": job.report_id, "Status": "SUBMITTED"}


@router.post("", status_code=202, response_model=SnapshotSubmitted, responses=_ERRORS)
async def submit_snapshot_job(
    body: shapes.SnapshotRequest, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    """Submit a snapshot job (QuickSight-style; `POST /v1/jobs` underneath): the dashboard is a report, the sheet
    and visual its one table (its dataset's id), EXCEL an .xlsx file. Delivered to the report's recipients in
    your organisation."""
    return await run_in_threadpool(_submit, _service(request), who, body)


def _page(
    service: JobService, who: Principal, dashboard_id: str | None, limit: int, token: str | None
) -> dict[str, Any]:
    after = None if token is None else read_page_token(token)
    jobs, cursor = service.page(who, dashboard_id, None, limit, after)
    tables: dict[str, str | None] = {}
    items = []
    for job in jobs:
        if job["report_id"] not in tables:
            tables[job["report_id"]] = _table(service, job["report_id"])
        items.append(shapes.listed(job, tables[job["report_id"]]))
    return {"Items": items, "Count": len(items), "nextToken": None if cursor is None else encode_page_token(cursor)}


@router.get("", responses=_ERRORS)
async def list_snapshot_jobs(
    request: Request,
    who: Principal = Depends(principal),
    dashboardId: str | None = Query(default=None, max_length=128, description="Only this dashboard's (report's)."),
    nextToken: str | None = Query(default=None, max_length=512, description="nextToken of the last page."),
    limit: int = Query(default=50, ge=1, le=200),
) -> dict[str, Any]:
    """Your organisation's snapshot jobs (every job, however submitted), newest first: `{Items, Count,
    nextToken}`, each item as the sample's job table holds it (`dashboardId`, `jobId`, `jobStatus`, ...)."""
    return await run_in_threadpool(_page, _service(request), who, dashboardId, limit, nextToken)


def _describe(service: JobService, who: Principal, dashboard_id: str, job_id: str) -> dict[str, Any]:
    job = _own_job(service, who, dashboard_id, job_id)
    return shapes.described(job, _table(service, dashboard_id) or "")


@router.get("/describe_job/{dashboardId}/{jobId}", responses=_ERRORS)
async def describe_snapshot_job(
    dashboardId: str, jobId: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    """The job: `JobStatus` (QUEUED, SUBMITTED, RUNNING, COMPLETED or FAILED), times, `SnapshotConfiguration`."""
    return await run_in_threadpool(_describe, _service(request), who, dashboardId, jobId)


def _result(service: JobService, who: Principal, dashboard_id: str, job_id: str) -> dict[str, Any]:
    job = _own_job(service, who, dashboard_id, job_id)
    manifest = service.result(who, job_id)
    return shapes.result_of(job, manifest, _table(service, dashboard_id) or "")


@router.get("/describe_job_result/{dashboardId}/{jobId}", responses=_ERRORS)
async def describe_snapshot_job_result(
    dashboardId: str, jobId: str, request: Request, who: Principal = Depends(principal)
) -> dict[str, Any]:
    """The finished job's result: `Result.AnonymousUsers`, one per recipient of your organisation, each with its
    files (`S3Results`: `S3Uri`, `ErrorInfo`). 409 until the job has finished."""
    return await run_in_threadpool(_result, _service(request), who, dashboardId, jobId)


def _download(
    request: Request, who: Principal, dashboard_id: str, job_id: str, recipient: str | None
) -> dict[str, Any]:
    service = _service(request)
    job = _own_job(service, who, dashboard_id, job_id)
    manifest = service.result(who, job_id)
    refs = [d.recipient for d in manifest.deliveries if recipient is None or d.recipient == recipient]
    if recipient is not None and not refs:
        raise NotFoundError(f"job {job_id!r} delivered nothing to recipient {recipient[:100]!r}", field="recipient")
    wanted = [(ref, fmt) for ref in refs for fmt in job["formats"] or []]
    if len(wanted) > LINKS_MAX:
        raise RequestError(
            f"job {job_id!r} has {len(wanted)} files; name one recipient: ?recipient=", field="recipient"
        )

    def files_url(name: str) -> str:
        return str(request.url_for("download_file", name=name))

    links = []
    for ref, fmt in wanted:
        try:
            made = service.download(who, job_id, fmt, ref, files_url)
        except NotFoundError:  # that recipient got no stored file (email only, or failed): ErrorInfo says why
            continue
        expires = made["expires_at"].isoformat()
        links.append({"recipient": ref, "format": fmt, "presignedUrl": made["url"], "expiresAt": expires})
    if not links:
        raise NotFoundError(f"job {job_id!r} stored no file this server can link", field="jobId")
    return {"presignedUrl": links[0]["presignedUrl"], "expiresAt": links[0]["expiresAt"], "files": links}


@router.get("/download_output/{dashboardId}/{jobId}", response_model=SnapshotDownload, responses=_ERRORS)
async def download_snapshot_output(
    dashboardId: str,
    jobId: str,
    request: Request,
    who: Principal = Depends(principal),
    recipient: str | None = Query(default=None, min_length=1, max_length=200, description="One recipient's file."),
) -> dict[str, Any]:
    """Time-limited links to the finished job's files (`presignedUrl`: the first, the only one for one
    recipient; `files`: each recipient's). A presigned S3 link, or a signed `/v1/files` link for the local
    bucket."""
    return await run_in_threadpool(_download, request, who, dashboardId, jobId, recipient)


def _delete(service: JobService, who: Principal, dashboard_id: str, job_id: str) -> None:
    _own_job(service, who, dashboard_id, job_id)
    service.remove(who, job_id)


@router.delete("/{dashboardId}/{jobId}", status_code=204, responses=_ERRORS)
async def delete_snapshot_job(
    dashboardId: str, jobId: str, request: Request, who: Principal = Depends(require_admin)
) -> Response:
    """Cancel a queued or running job, or delete a finished one's files and record (`DELETE /v1/jobs/{id}`).
    Admin keys only."""
    await run_in_threadpool(_delete, _service(request), who, dashboardId, jobId)
    return Response(status_code=204)
