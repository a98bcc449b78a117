"""On-demand report jobs over HTTP (QuickSight-style snapshot jobs), scoped to the caller's organisation.

* ``POST /v1/jobs`` ``{report_id, formats, recipients?, parameters?, output?: {prefix}, job_id?}`` -> 202
  ``{job_id, status}``. Checked up front (unknown report, format, parameter or recipient: 400 naming the field,
  nothing recorded); then the job is recorded and its deliver-report flow run started through Prefect. A
  caller-chosen ``job_id`` is an idempotency key: the same id and body answer the same job (200), another body 409.
* ``GET /v1/jobs?report_id=&status=&limit=&page_token=`` -> ``{jobs, next_page_token}``, newest first, keyset
  paginated (an opaque token).
* ``GET /v1/jobs/{job_id}`` -> the job (status from its flow run, times, parameters, error).
* ``GET /v1/jobs/{job_id}/result`` -> its manifest (409 until it has finished).
* ``GET /v1/jobs/{job_id}/download?format=pdf&recipient=REF`` -> ``{url, expires_at}``.
* ``DELETE /v1/jobs/{job_id}`` -> 204: cancels a queued or running job, or deletes a finished one's files,
  manifest and record.

Any key of the organisation may submit and read jobs (a job delivers only to the organisation's own recipients);
``DELETE`` needs an admin key, because it destroys delivered files. Another organisation's job answers 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from bulletin.edge.api.auth import Principal, principal, require_admin
from bulletin.edge.api.job_service import JobService
from bulletin.edge.api.job_status import JobStatus
from bulletin.edge.api.paging import encode_page_token, read_page_token
from bulletin.models import FORMATS, Format, Manifest
from bulletin.store.jobs import JOB_ID_MAX

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
RECIPIENTS_MAX = 1_000
Scalar = str | int | float | bool


class Output(BaseModel):
    """Where the files go (QuickSight's ``bucketConfiguration``)."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(
        min_length=1,
        max_length=256,
        description="An object key prefix: segments of letters, digits, '.', '_', '-' joined by '/'. Recorded with "
        "the job; files are stored under the report's usual keys (see docs/delivery.md).",
    )


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    report_id: str = Field(min_length=1, max_length=128, description="A report of deployments/reports/.")
    formats: list[Format] = Field(min_length=1, max_length=len(FORMATS), description="Some of the report's formats.")
    recipients: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=RECIPIENTS_MAX,
        description="Recipient refs of your organisation in the report's audience. Default: all of them.",
    )
    parameters: dict[str, Scalar] | None = Field(default=None, description="Report parameters, e.g. as_of.")
    output: Output | None = None
    job_id: str | None = Field(
        default=None,
        pattern=JOB_ID_PATTERN,
        max_length=JOB_ID_MAX,
        description="Your id for the job, unique in your organisation: an idempotency key.",
    )


class Submitted(BaseModel):
    job_id: str
    status: JobStatus


class JobShown(BaseModel):
    job_id: str
    report_id: str
    status: JobStatus
    formats: list[str] | None
    recipients: list[str] | None
    parameters: dict[str, Any]
    output: dict[str, Any] | None
    flow_run_id: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


class JobPage(BaseModel):
    jobs: list[JobShown]
    next_page_token: str | None


class DownloadLink(BaseModel):
    url: str = Field(description="A presigned S3 link, or a signed link to this API's /v1/files for the local bucket.")
    expires_at: datetime


def _service(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


JOB_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"model": Submitted, "description": "The job of this job_id."}}


@router.post("", status_code=202, response_model=Submitted, responses=JOB_RESPONSES)
async def submit_job(
    body: JobRequest, request: Request, response: Response, who: Principal = Depends(principal)
) -> Submitted:
    """Submit a report job (a QuickSight-style snapshot job): 202 with its id; 200 when job_id names this same job."""
    job, status, created = await run_in_threadpool(_service(request).submit, who, body.model_dump(exclude_none=True))
    response.status_code = 202 if created else 200
    return Submitted(job_id=job.job_id, status=status)


@router.get("", response_model=JobPage)
async def list_report_jobs(
    request: Request,
    who: Principal = Depends(principal),
    report_id: str | None = Query(default=None, max_length=128),
    status: JobStatus | None = Query(default=None),
    limit: int = Query(default=50, ge=1, le=200),
    page_token: str | None = Query(default=None, max_length=512, description="next_page_token of the last page."),
) -> dict[str, Any]:
    """Your organisation's jobs, newest first."""
    after = None if page_token is None else read_page_token(page_token)
    jobs, cursor = await run_in_threadpool(_service(request).page, who, report_id, status, limit, after)
    return {"jobs": jobs, "next_page_token": None if cursor is None else encode_page_token(cursor)}


@router.get("/{job_id}", response_model=JobShown)
async def describe_job(job_id: str, request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    """One job: status, times, parameters, error."""
    return await run_in_threadpool(_service(request).describe, who, job_id)


@router.get("/{job_id}/result", response_model=Manifest)
async def describe_job_result(job_id: str, request: Request, who: Principal = Depends(principal)) -> Manifest:
    """The finished job's manifest (your organisation's deliveries); 409 while it runs."""
    return await run_in_threadpool(_service(request).result, who, job_id)


@router.get("/{job_id}/download", response_model=DownloadLink)
async def download_job_output(
    job_id: str,
    request: Request,
    who: Principal = Depends(principal),
    format: Format = Query(description=f"{', '.join(FORMATS[:-1])} or {FORMATS[-1]}"),
    recipient: str = Query(min_length=1, max_length=200, description="The recipient's ref."),
) -> dict[str, Any]:
    """A time-limited link to one file of the finished job."""

    def files_url(name: str) -> str:
        return str(request.url_for("download_file", name=name))

    return await run_in_threadpool(_service(request).download, who, job_id, format, recipient, files_url)


@router.delete("/{job_id}", status_code=204)
async def delete_report_job(job_id: str, request: Request, who: Principal = Depends(require_admin)) -> Response:
    """Cancel a queued or running job, or delete a finished one's files and record. Admin keys only."""
    await run_in_threadpool(_service(request).remove, who, job_id)
    return Response(status_code=204)
