"""What the jobs routes do, as plain functions over the store, Prefect and the bucket (run in a worker thread).

A job is a flow run of deliver-report started through ``FlowStarter`` (a ``deliver-report/<report>`` deployment
when one exists, else here in the API's bounded pool), with ``run_key`` = ``job-<internal id>``, so a retried run
never sends anything twice. Its status is read from Prefect each time (``bulletin.edge.api.job_status``); its result is
the manifest the run saved under ``manifests_dir``.

Organisations: a job delivers only to recipients of the caller's organisation (the report audience's ``org``), and
its result and downloads show only those deliveries, so no key can reach another organisation's files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.states import Cancelled, Cancelling

from bulletin.clock import Clock
from bulletin.edge.api.auth import Principal
from bulletin.edge.api.file_links import FileLink, derive_secret, link_expiry, sign_link
from bulletin.edge.api.job_status import FINISHED, JobStatus, job_status
from bulletin.edge.api.query import QueryEngine
from bulletin.edge.api.runs import FlowStarter, Target
from bulletin.errors import (
    BulletinError,
    ConflictError,
    DefinitionError,
    NotFoundError,
    RequestError,
    StorageError,
    TransientError,
)
from bulletin.models import Manifest
from bulletin.reports import get_report
from bulletin.requests import check_request
from bulletin.settings import Settings
from bulletin.store import Store
from bulletin.store.jobs import Job, create_job, cursor_of, delete_job, get_job, list_jobs, set_flow_run
from flows.deliver_report import deliver_report
from tasks.audience import resolve_audience
from tasks.delivery.manifest import manifest_file
from tasks.delivery.registry import channel_problem, file_store
from tasks.storage import PREFIX_MAX_BYTES, Destination, LocalBucket, LocalLinks, UriLink
from tasks.storage import check_prefix as check_storage_prefix

logger = logging.getLogger(__name__)

PREFIX_MAX = PREFIX_MAX_BYTES
#: Jobs read per store page while filtering a listing by status (status lives in Prefect, not in the store).
SCAN_CHUNK = 200
SCAN_CHUNKS_MAX = 10


def check_prefix(prefix: str) -> str:
    """``output.prefix``: one or more safe key segments (security.md's S3 key rules), no leading or trailing ``/``."""
    try:
        return check_storage_prefix(prefix)
    except StorageError as exc:
        raise RequestError(
            f"output.prefix must be at most {PREFIX_MAX} bytes of segments of letters, digits, '.', '_' and '-' "
            "joined by '/' (no '..', no leading or trailing '/', no backslash)",
            field="output.prefix",
        ) from exc


def manifest_path(settings: Settings, job: Job) -> Path | None:
    """Where the job's run saved its manifest (``tasks.delivery.manifest.save_manifest``, named by the whole flow-run
    id).

    A manifest saved before runs were named by their whole id is named by the id's first 12 hex digits: that name
    is read when it is the only one there.
    """
    if job.flow_run_id is None:
        return None
    path = manifest_file(settings.manifests_dir, job.report_id, job.flow_run_id)
    legacy = manifest_file(settings.manifests_dir, job.report_id, job.flow_run_id.replace("-", "")[:12])
    return legacy if not path.exists() and legacy.exists() else path


def own_deliveries(manifest: Manifest, org: str) -> Manifest:
    """The manifest with only ``org``'s deliveries."""
    return manifest.model_copy(update={"deliveries": [d for d in manifest.deliveries if d.org == org]})


def local_key(bucket_root: Path, uri: str) -> str:
    """The object key of a ``file://`` URI inside the local bucket; StorageError if it points anywhere else."""
    return LocalBucket(bucket_root).key_of(uri)


@dataclass
class JobService:
    store: Store
    settings: Settings
    starter: FlowStarter
    engine: QueryEngine
    clock: Clock

    # --- submit -----------------------------------------------------------------------------------------------

    def submit(self, who: Principal, request: dict[str, Any]) -> tuple[Job, JobStatus, bool]:
        """Check, record, start. ``(job, status, created)``; a replayed ``job_id`` answers its job, unstarted anew."""
        report_id: str = request["report_id"]
        self._check(report_id, request)
        recipients = self._recipients(who.org, report_id, request.get("recipients"))
        job, created = create_job(
            self.store,
            org=who.org,
            key_id=who.key_id,
            job_id=request.get("job_id"),
            report_id=report_id,
            request={k: v for k, v in request.items() if k != "job_id"},
            now=self.clock(),
        )
        if not created:
            return job, self._statuses([job]).get(job.job_id, (JobStatus.QUEUED, None))[0], False
        parameters = {
            "report_id": report_id,
            "recipients": recipients,
            "formats": request.get("formats"),
            "parameters": request.get("parameters"),
            "run_key": job.run_key,
            "output_prefix": (request.get("output") or {}).get("prefix"),
        }
        try:
            with self.starter.prepare(Target(f"deliver-report/{report_id}", deliver_report), parameters) as ready:
                run_id = self.starter.start(ready, idempotency_key=job.run_key, tags=[f"job:{job.id}", "bulletin-job"])
        except BulletinError:
            delete_job(self.store, job)  # no run, no job: the caller retries the whole request
            raise
        job = set_flow_run(self.store, job, str(run_id), now=self.clock())
        return job, JobStatus.QUEUED, True

    def _check(self, report_id: str, request: dict[str, Any]) -> None:
        try:
            check_request(
                self.settings,
                report_id,
                formats=request.get("formats"),
                parameters=request.get("parameters"),
                channels=channel_problem,
            )
        except NotFoundError as exc:
            raise RequestError(f"no report {report_id!r}", field="report_id") from exc
        except DefinitionError as exc:
            where = exc.field or "parameters"
            if where not in ("formats", "parameters", "report_id"):
                where = f"parameters.{where}"
            raise RequestError(exc.message, field=where) from exc
        output = request.get("output")
        if output is not None:
            check_prefix(output["prefix"])

    def _recipients(self, org: str, report_id: str, requested: list[str] | None) -> list[str]:
        """The refs to deliver to: the report's audience in ``org`` (or the requested ones, each of it)."""
        report = get_report(self.settings.reports_dir, report_id)
        ours = [r.ref for r in resolve_audience(report, self.engine.warehouse()) if r.org == org]
        if requested is None:
            if not ours:
                raise RequestError(f"report {report_id!r} has no recipients in your organisation", field="report_id")
            return ours
        members = set(ours)
        for index, ref in enumerate(requested):
            if ref not in members:
                raise RequestError(
                    f"recipient {ref[:100]!r} is not in the audience of report {report_id!r} for your organisation",
                    field=f"recipients.{index}",
                )
        return list(dict.fromkeys(requested))

    # --- read ---------------------------------------------------------------------------------------------------

    def describe(self, who: Principal, job_id: str) -> dict[str, Any]:
        job = get_job(self.store, who.org, job_id)
        status, run = self._statuses([job]).get(job.job_id, (JobStatus.QUEUED, None))
        return shown(job, status, run)

    def page(
        self,
        who: Principal,
        report_id: str | None,
        status: JobStatus | None,
        limit: int,
        token: tuple[datetime, str] | None,
    ) -> tuple[list[dict[str, Any]], tuple[datetime, str] | None]:
        """One page and the cursor of the next (None at the end). With ``status``, store pages are read and
        filtered until ``limit`` match or ``SCAN_CHUNKS_MAX`` chunks were read (then the page may be short, and
        the cursor goes on from the last job read)."""
        chunk = limit + 1 if status is None else SCAN_CHUNK
        found: list[dict[str, Any]] = []
        after = token
        for _ in range(1 if status is None else SCAN_CHUNKS_MAX):
            jobs = list_jobs(self.store, org=who.org, report_id=report_id, limit=chunk, after=after)
            statuses = self._statuses(jobs[:limit] if status is None else jobs)
            for index, job in enumerate(jobs):
                if status is None and index == limit:
                    return found, cursor_of(jobs[limit - 1])
                current, run = statuses.get(job.job_id, (JobStatus.QUEUED, None))
                if status is None or current is status:
                    found.append(shown(job, current, run))
                    if status is not None and len(found) == limit:
                        more = index < len(jobs) - 1 or len(jobs) == chunk
                        return found, cursor_of(job) if more else None
            if len(jobs) < chunk:
                return found, None
            after = cursor_of(jobs[-1])
        return found, after

    def result(self, who: Principal, job_id: str) -> Manifest:
        manifest, _ = self._finished(who, job_id)
        return manifest

    def _finished(self, who: Principal, job_id: str) -> tuple[Manifest, Job]:
        job = get_job(self.store, who.org, job_id)
        status, run = self._statuses([job]).get(job.job_id, (JobStatus.QUEUED, None))
        if status not in FINISHED:
            raise ConflictError(
                f"job {job_id!r} is {status.value}; its result is ready once it has finished", field="job_id"
            )
        path = manifest_path(self.settings, job)
        if path is None or not path.is_file():
            why = _run_message(run) or "it ended before it delivered anything"
            raise ConflictError(f"job {job_id!r} ended {status.value} without a result: {why}", field="job_id")
        manifest = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        return own_deliveries(manifest, who.org), job

    def download(
        self, who: Principal, job_id: str, fmt: str, recipient: str, files_url: Callable[[str], str]
    ) -> dict[str, Any]:
        """``{url, expires_at}``: a presigned S3 link, or a signed link to ``GET /v1/files/...`` for the local
        bucket. ``files_url(name)`` is the absolute URL of that route for a file name."""
        manifest, _ = self._finished(who, job_id)
        delivery = next((d for d in manifest.deliveries if d.recipient == recipient), None)
        if delivery is None:
            raise NotFoundError(f"job {job_id!r} delivered nothing to recipient {recipient[:100]!r}", field="recipient")
        stored = (a for a in delivery.artifacts if a.format == fmt and a.uri and self._holds_files(a.channel))
        artifact = next(stored, None)
        if artifact is None:
            raise NotFoundError(f"job {job_id!r} stored no {fmt} file for recipient {recipient!r}", field="format")
        try:
            made = self._destination(who, artifact.channel, files_url).link(
                artifact.uri, None, self.settings.link_expiry_seconds
            )
        except StorageError as exc:
            raise NotFoundError(f"job {job_id!r}'s {fmt} file is not in this server's bucket", field="format") from exc
        return {"url": made.url, "expires_at": made.expires_at}

    def _holds_files(self, channel: str) -> bool:
        """Whether the files delivered on ``channel`` stay in a store this server reaches (the bucket; not email)."""
        return file_store(channel, self.settings) is not None

    def _destination(self, who: Principal, channel: str, files_url: Callable[[str], str] | None = None) -> Destination:
        """The store of ``channel``'s files. If it is the local folder, ``GET /v1/files/...`` serves its files with
        a link signed for ``who``'s organisation; ``files_url(name)`` is the absolute URL of that route."""
        if files_url is None:
            return self._store_of(channel, None)
        route = files_url

        def signed(key: str, filename: str, seconds: int) -> UriLink:
            link = FileLink(key=key, org=who.org, expires_at=link_expiry(self.clock(), seconds))
            token = sign_link(self.link_secret(), link)
            return UriLink(url=f"{route(filename)}?token={token}", expires_at=link.expires_at)

        return self._store_of(channel, signed)

    def _store_of(self, channel: str, local_links: LocalLinks | None) -> Destination:
        choice = file_store(channel, self.settings, local_links=local_links, clock=self.clock)
        if choice is None:  # callers ask only for channels that hold files
            raise NotFoundError(f"channel {channel!r} keeps no files on this server", field="format")
        return choice.build()

    def link_secret(self) -> bytes:
        if self.settings.file_link_secret is not None:
            return self.settings.file_link_secret.get_secret_value().encode()
        keyset = self.engine.keyset()
        value = keyset.active.private_key.private_numbers().private_value
        return derive_secret(keyset.active_kid.encode() + b":" + value.to_bytes(32, "big"))

    # --- cancel or delete ---------------------------------------------------------------------------------------

    def remove(self, who: Principal, job_id: str) -> None:
        """Cancel a queued or running job; delete a finished one's files (of the caller's organisation), manifest
        and record."""
        job = get_job(self.store, who.org, job_id)
        status, run = self._statuses([job]).get(job.job_id, (JobStatus.QUEUED, None))
        if status not in FINISHED:
            if job.flow_run_id is None:
                raise ConflictError(f"job {job_id!r} is being started; try again in a moment", field="job_id")
            self._cancel(UUID(job.flow_run_id), running=status is JobStatus.RUNNING or _is_running(run))
            return
        path = manifest_path(self.settings, job)
        if path is not None and path.is_file():
            manifest = own_deliveries(Manifest.model_validate_json(path.read_text(encoding="utf-8")), who.org)
            self._delete_files(who, manifest)
            path.unlink(missing_ok=True)
        delete_job(self.store, job)

    def _cancel(self, flow_run_id: UUID, *, running: bool) -> None:
        state: State[Any] = (
            Cancelling(message="cancelled through the jobs API")
            if running
            else Cancelled(message="cancelled through the jobs API before it started")
        )
        try:
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(flow_run_id, state, force=True)
        except (PrefectHTTPStatusError, httpx.HTTPError, OSError) as exc:
            raise TransientError("Prefect is not reachable; try again later") from exc

    def _delete_files(self, who: Principal, manifest: Manifest) -> None:
        """Delete the files the run stored; one recorded elsewhere (another bucket) is left alone."""
        uris: dict[str, list[str]] = {}  # per channel that keeps files
        for a in (a for d in manifest.deliveries for a in d.artifacts):
            if a.outcome == "sent" and a.uri and self._holds_files(a.channel):
                uris.setdefault(a.channel, []).append(a.uri)
        for channel, stored in uris.items():  # no file, no store reached: S3's client is not built for nothing
            destination = self._destination(who, channel)
            for uri in stored:
                if destination.holds(uri):
                    destination.delete(uri)

    # --- Prefect ------------------------------------------------------------------------------------------------

    def _statuses(self, jobs: list[Job]) -> dict[str, tuple[JobStatus, FlowRun | None]]:
        """Each job's status, from one read of its flow runs; a job whose run is not (yet) known is QUEUED."""
        from tasks.delivery.capacity import is_waiting_for_slot

        ids = [UUID(j.flow_run_id) for j in jobs if j.flow_run_id]
        runs: dict[str, FlowRun] = {}
        if ids:
            try:
                with get_client(sync_client=True) as client:
                    found = client.read_flow_runs(
                        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids)
                    )
            except (PrefectHTTPStatusError, httpx.HTTPError, OSError, ObjectNotFound) as exc:
                raise TransientError("Prefect is not reachable; try again later") from exc
            runs = {str(r.id): r for r in found}
        answer: dict[str, tuple[JobStatus, FlowRun | None]] = {}
        for job in jobs:
            run = runs.get(job.flow_run_id or "")
            state = run.state if run is not None else None
            status = job_status(
                state.type.value if state is not None else None,
                state.name if state is not None else None,
                waiting_for_slot=run is not None and is_waiting_for_slot(run),
            )
            answer[job.job_id] = (status, run)
        return answer


def _is_running(run: FlowRun | None) -> bool:
    return run is not None and run.state is not None and run.state.is_running()


def _run_message(run: FlowRun | None) -> str | None:
    return None if run is None or run.state is None else run.state.message


def shown(job: Job, status: JobStatus, run: FlowRun | None) -> dict[str, Any]:
    request = job.request
    error = job.error
    if error is None and status in (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PARTIAL):
        error = _run_message(run)
    return {
        "job_id": job.job_id,
        "report_id": job.report_id,
        "status": status,
        "formats": request.get("formats"),
        "recipients": request.get("recipients"),
        "parameters": request.get("parameters") or {},
        "output": request.get("output"),
        "flow_run_id": job.flow_run_id,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": run.start_time if run is not None else None,
        "finished_at": run.end_time if run is not None and status in FINISHED else None,
        "error": error,
    }
