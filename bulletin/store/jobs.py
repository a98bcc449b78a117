"""On-demand report jobs (QuickSight-style) in the state store: create idempotently, read, list, delete.

A job is one request to deliver a report now, run as a Prefect flow run of deliver-report. Its status lives in
Prefect (the flow run's state); the row keeps who asked, what was asked, and which flow run does it.

A caller-chosen ``job_id`` is an idempotency key per organisation, enforced by a unique constraint on
``(org, job_id)``: the same id with the same request (its ``request_digest``) answers the job already made; with
another request it is a ConflictError (409). Two requests racing with one id both end on the one row. The
internal ``id`` (a fresh uuid) names the job's ledger run key, so a job deleted and submitted again is a new run.
``migrations/versions/0006_jobs.py`` is the frozen copy of the table. Every function takes the clock (``now``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)

from bulletin.errors import ConflictError, NotFoundError, StorageError
from bulletin.store.base import UTCDateTime, aware, check_limit, metadata, newest_first
from bulletin.store.db import Store

JOB_ID_MAX = 64
ERROR_MAX = 2_000
LIST_LIMIT_MAX = 500

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("org", String(128), nullable=False),
    Column("job_id", String(JOB_ID_MAX), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("report_id", String(128), nullable=False),
    Column("request", JSON, nullable=False),
    Column("request_digest", String(64), nullable=False),
    Column("flow_run_id", String(40)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("error", Text),
    UniqueConstraint("org", "job_id", name="uq_jobs_org_job_id"),
    Index("ix_jobs_org_created", "org", "created_at", "job_id"),
)


class Job(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    org: str
    job_id: str
    key_id: str
    report_id: str
    request: dict[str, Any]
    request_digest: str
    flow_run_id: str | None
    created_at: datetime
    updated_at: datetime
    error: str | None

    @property
    def run_key(self) -> str:
        """The delivery-ledger key of this job's run: a retry of the run never sends twice."""
        return f"job-{self.id}"


def request_digest(request: dict[str, Any]) -> str:
    """sha256 of the request as canonical JSON (sorted keys, compact): equal requests, equal digests."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def create_job(
    store: Store,
    *,
    org: str,
    key_id: str,
    job_id: str | None,
    report_id: str,
    request: dict[str, Any],
    now: datetime,
) -> tuple[Job, bool]:
    """Record a job; ``(job, True)`` when made now, ``(existing, False)`` when ``job_id`` names one with the same
    request. The same ``job_id`` with another request is a ConflictError."""
    now = aware(now)
    internal = uuid.uuid4().hex
    digest = request_digest(request)
    public_id = job_id or f"job_{internal}"
    row: dict[str, Any] = {
        "id": internal,
        "org": org,
        "job_id": public_id,
        "key_id": key_id,
        "report_id": report_id,
        "request": request,
        "request_digest": digest,
        "created_at": now,
        "updated_at": now,
    }
    if job_id is not None:
        existing = _same_or_conflict(store, org, job_id, digest)
        if existing is not None:
            return existing, False
    try:
        with store.write() as conn:
            conn.execute(insert(jobs).values(row))
            return _job(conn, org, public_id), True
    except StorageError:
        # The unique (org, job_id) constraint: another request with this id won the race; answer as it did.
        if job_id is None:
            raise
        existing = _same_or_conflict(store, org, job_id, digest)
        if existing is None:
            raise
        return existing, False


def _same_or_conflict(store: Store, org: str, job_id: str, digest: str) -> Job | None:
    with store.read() as conn:
        found = _find(conn, org, job_id)
    if found is not None and found.request_digest != digest:
        raise ConflictError(
            f"job_id {job_id!r} is already used by a job with another request; choose another job_id",
            field="job_id",
        )
    return found


def set_flow_run(store: Store, job: Job, flow_run_id: str, *, now: datetime) -> Job:
    with store.write() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job.id).values(flow_run_id=flow_run_id, updated_at=aware(now)))
        return _job(conn, job.org, job.job_id)


def set_error(store: Store, job: Job, error: str, *, now: datetime) -> None:
    with store.write() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job.id).values(error=error[:ERROR_MAX], updated_at=aware(now)))


def delete_job(store: Store, job: Job) -> None:
    with store.write() as conn:
        conn.execute(delete(jobs).where(jobs.c.id == job.id))


def get_job(store: Store, org: str, job_id: str) -> Job:
    """``org``'s job; NotFoundError for a missing one and for another organisation's alike."""
    with store.read() as conn:
        found = _find(conn, org, job_id)
    if found is None:
        raise not_found(job_id)
    return found


def list_jobs(
    store: Store,
    *,
    org: str,
    report_id: str | None = None,
    limit: int = 50,
    after: tuple[datetime, str] | None = None,
    job_ids: Sequence[str] | None = None,
) -> list[Job]:
    """``org``'s jobs, newest first by (created_at, job_id), strictly after the cursor ``after`` (keyset
    pagination: a page never repeats or skips a job because others were created meanwhile)."""
    check_limit(limit, LIST_LIMIT_MAX)
    c = jobs.c
    query = select(jobs).where(c.org == org)
    if report_id is not None:
        query = query.where(c.report_id == report_id)
    if job_ids is not None:
        query = query.where(c.job_id.in_(list(job_ids)))
    query = newest_first(query, c.created_at, c.job_id, after=after, limit=limit)
    with store.read() as conn:
        return [Job.model_validate(dict(row)) for row in conn.execute(query).mappings()]


def cursor_of(job: Job) -> tuple[datetime, str]:
    return job.created_at, job.job_id


def not_found(job_id: str) -> NotFoundError:
    return NotFoundError(f"no job {job_id[:JOB_ID_MAX]!r}", field="job_id")


def _find(conn: Connection, org: str, job_id: str) -> Job | None:
    found = conn.execute(select(jobs).where(jobs.c.org == org, jobs.c.job_id == job_id)).mappings().first()
    return None if found is None else Job.model_validate(dict(found))


def _job(conn: Connection, org: str, job_id: str) -> Job:
    found = _find(conn, org, job_id)
    if found is None:
        raise not_found(job_id)
    return found
