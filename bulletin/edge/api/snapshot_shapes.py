"""QuickSight-style snapshot jobs, the pure half: the request as QuickSight's sample API takes it, turned into a
Bulletin job request, and Bulletin's job answers turned into QuickSight's. No I/O, so every mapping is a unit test.

The mapping (docs/api.md, "QuickSight-style snapshot jobs"):

===============================  ==================================================================
QuickSight                       Bulletin
===============================  ==================================================================
``dashboardId``                  a report id
``sheetId``, ``visualId``        the report's one table, named by its dataset (``sales``)
``format`` PDF / CSV / EXCEL     ``formats`` [pdf] / [csv] / [xlsx]
``parameters`` (``StringParameters``, ``IntegerParameters``, ``DecimalParameters``,
``DateTimeParameters``: ``[{Name, Values: [one]}]``) -> ``parameters`` {name: value}
``bucketConfiguration.BucketPrefix``  ``output.prefix`` (one trailing ``/`` dropped; checked as Bulletin's)
``SnapshotJobId``                a job id
anonymous users                  the report's recipients in the caller's organisation
===============================  ==================================================================

Job states, as the sample API names them, from Bulletin's (``bulletin.edge.api.job_status``):

=====================================================  ==========
Bulletin job                                            QuickSight
=====================================================  ==========
QUEUED, its flow run not started yet                    SUBMITTED
QUEUED, its flow run started and waiting for a slot     QUEUED     (the report-run cap: docs/delivery.md)
RUNNING                                                 RUNNING
COMPLETED, PARTIAL                                      COMPLETED  (a recipient's failure is in its ErrorInfo)
FAILED, CANCELLED                                       FAILED
=====================================================  ==========
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bulletin.edge.api.job_status import JobStatus
from bulletin.errors import RequestError
from bulletin.models import Manifest
from tasks.storage import PREFIX_MAX_BYTES

SnapshotFormat = Literal["PDF", "CSV", "EXCEL"]
SNAPSHOT_FORMATS: dict[str, str] = {"PDF": "pdf", "CSV": "csv", "EXCEL": "xlsx"}
FORMAT_NAMES = {v: k for k, v in SNAPSHOT_FORMATS.items()}
_STATUS = {
    JobStatus.RUNNING: "RUNNING",
    JobStatus.COMPLETED: "COMPLETED",
    JobStatus.PARTIAL: "COMPLETED",
    JobStatus.FAILED: "FAILED",
    JobStatus.CANCELLED: "FAILED",
}
_PARAMETER_KINDS = ("StringParameters", "IntegerParameters", "DecimalParameters", "DateTimeParameters")
#: Channels whose files are sent, not stored: no S3Results entry (the recipient's other channels have theirs).
_NOT_STORED = frozenset({"email", "dry-run"})
VISUALS_MAX = 10
PARAMETERS_MAX = 50


class BucketConfiguration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    BucketPrefix: str = Field(
        min_length=1,
        max_length=PREFIX_MAX_BYTES + 1,
        description="An object key prefix (one trailing '/' is dropped): segments of letters, digits, '.', '_', '-' "
        "joined by '/', checked as Bulletin's output.prefix.",
    )


class Parameter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    Name: str = Field(min_length=1, max_length=128)
    Values: list[str | int | float] = Field(min_length=1, max_length=1, description="One value.")


class Parameters(BaseModel):
    """QuickSight's ``Parameters``; each name once, one value each."""

    model_config = ConfigDict(extra="forbid")

    StringParameters: list[Parameter] = Field(default_factory=list, max_length=PARAMETERS_MAX)
    IntegerParameters: list[Parameter] = Field(default_factory=list, max_length=PARAMETERS_MAX)
    DecimalParameters: list[Parameter] = Field(default_factory=list, max_length=PARAMETERS_MAX)
    DateTimeParameters: list[Parameter] = Field(
        default_factory=list, max_length=PARAMETERS_MAX, description="ISO 8601; a midnight time is a date."
    )


class SnapshotRequest(BaseModel):
    """The sample API's submit request, field for field."""

    model_config = ConfigDict(extra="forbid")

    dashboardId: str = Field(min_length=1, max_length=128, description="A report id (deployments/reports/).")
    sheetId: str = Field(min_length=1, max_length=128, description="The report's one table: its dataset's id.")
    format: SnapshotFormat = Field(description="PDF, CSV or EXCEL (an .xlsx file); one of the report's formats.")
    parameters: Parameters | None = Field(default=None, description="Report parameters; null for their defaults.")
    visualId: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=VISUALS_MAX,
        description="Required for CSV and EXCEL: the report's one table (its dataset's id), as sheetId.",
    )
    bucketConfiguration: BucketConfiguration | None = None


def _parameter_value(kind: str, value: str | int | float) -> str | int | float:
    """A DateTime value at midnight is the date (Bulletin's date parameters); any other value as given."""
    if kind != "DateTimeParameters" or not isinstance(value, str):
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.date().isoformat() if moment.time() == datetime.min.time() else value


def job_parameters(parameters: Parameters | None) -> dict[str, Any] | None:
    """QuickSight's parameter lists as Bulletin's ``{name: value}``; a name given twice is refused."""
    if parameters is None:
        return None
    found: dict[str, Any] = {}
    for kind in _PARAMETER_KINDS:
        for index, parameter in enumerate(getattr(parameters, kind)):
            if parameter.Name in found:
                raise RequestError(f"parameter {parameter.Name!r} is given twice", field=f"parameters.{kind}.{index}")
            found[parameter.Name] = _parameter_value(kind, parameter.Values[0])
    return found or None


def check_sheet(request: SnapshotRequest, table: str) -> None:
    """``sheetId`` and every ``visualId`` name the report's one table; CSV and EXCEL need a ``visualId``."""
    if request.sheetId != table:
        raise RequestError(
            f"report {request.dashboardId!r} has one sheet, {table!r} (its dataset); sheetId {request.sheetId[:60]!r} "
            "is not it",
            field="sheetId",
        )
    if request.format != "PDF" and not request.visualId:
        raise RequestError(f"a {request.format} snapshot needs visualId: [{table!r}]", field="visualId")
    for index, visual in enumerate(request.visualId or []):
        if visual != table:
            raise RequestError(
                f"report {request.dashboardId!r} has one visual, {table!r}; visualId {visual[:60]!r} is not it",
                field=f"visualId.{index}",
            )


def bucket_prefix(request: SnapshotRequest) -> str | None:
    """The prefix as Bulletin checks it: the sample sends ``snapshots/{id}/``, so one trailing ``/`` goes."""
    if request.bucketConfiguration is None:
        return None
    prefix = request.bucketConfiguration.BucketPrefix
    return prefix[:-1] if prefix.endswith("/") else prefix


def job_request(request: SnapshotRequest) -> dict[str, Any]:
    """The ``POST /v1/jobs`` body this snapshot request is (checked further by the jobs service)."""
    body: dict[str, Any] = {"report_id": request.dashboardId, "formats": [SNAPSHOT_FORMATS[request.format]]}
    parameters = job_parameters(request.parameters)
    if parameters is not None:
        body["parameters"] = parameters
    prefix = bucket_prefix(request)
    if prefix is not None:
        body["output"] = {"prefix": prefix}
    return body


def snapshot_status(job: dict[str, Any]) -> str:
    """QuickSight's state of a job as ``JobService.describe`` shows it (module docstring's table)."""
    status = JobStatus(job["status"])
    if status is JobStatus.QUEUED:
        return "QUEUED" if job.get("started_at") else "SUBMITTED"
    return _STATUS[status]


def _files(job: dict[str, Any], table: str) -> list[dict[str, Any]]:
    selections = [{"SheetId": table, "SelectionScope": "ALL_VISUALS"}]
    return [{"FormatType": FORMAT_NAMES.get(f, f.upper()), "SheetSelections": selections} for f in job["formats"] or []]


def quicksight_parameters(parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    """Bulletin's ``{name: value}`` as QuickSight's ``Parameters`` lists (the inverse of ``job_parameters``)."""
    if not parameters:
        return None
    found: dict[str, list[dict[str, Any]]] = {}
    for name, value in parameters.items():
        kind = (
            "IntegerParameters"
            if isinstance(value, int) and not isinstance(value, bool)
            else "DecimalParameters"
            if isinstance(value, float)
            else "StringParameters"
        )
        found.setdefault(kind, []).append({"Name": name, "Values": [value]})
    return found


def snapshot_configuration(job: dict[str, Any], table: str) -> dict[str, Any]:
    """The job's request in QuickSight's ``SnapshotConfiguration`` shape."""
    prefix = (job.get("output") or {}).get("prefix")
    destinations = [] if prefix is None else [{"BucketConfiguration": {"BucketPrefix": prefix}}]
    return {
        "FileGroups": [{"Files": _files(job, table)}],
        "DestinationConfiguration": {"S3Destinations": destinations},
        "Parameters": quicksight_parameters(job.get("parameters")),
    }


def _error_info(job: dict[str, Any]) -> dict[str, str] | None:
    if job.get("error") is None:
        return None
    kind = "CANCELLED" if job["status"] == JobStatus.CANCELLED else "DELIVERY_FAILED"
    return {"ErrorMessage": str(job["error"]), "ErrorType": kind}


def described(job: dict[str, Any], table: str) -> dict[str, Any]:
    """``describe_job``: QuickSight's DescribeDashboardSnapshotJob answer for a Bulletin job."""
    return {
        **_job_head(job),
        "SnapshotConfiguration": snapshot_configuration(job, table),
        "ErrorInfo": _error_info(job),
    }


def _job_head(job: dict[str, Any]) -> dict[str, Any]:
    """What both describe answers start with: the job, its dashboard, its state and times."""
    return {
        "DashboardId": job["report_id"],
        "SnapshotJobId": job["job_id"],
        "JobStatus": snapshot_status(job),
        "CreatedTime": job["created_at"],
        "LastUpdatedTime": job["finished_at"] or job["updated_at"],
    }


def _s3_results(delivery: Any, formats: list[str]) -> list[dict[str, Any]]:
    results = []
    stored = (a for a in delivery.artifacts if a.format in formats and a.channel not in _NOT_STORED)
    for artifact in stored:
        failed = artifact.outcome == "failed"
        error = [{"ErrorMessage": artifact.note or "not delivered", "ErrorType": "DELIVERY_FAILED"}] if failed else []
        results.append({"Channel": artifact.channel, "S3Uri": artifact.uri or None, "ErrorInfo": error})
    return results


def result_of(job: dict[str, Any], manifest: Manifest, table: str) -> dict[str, Any]:
    """``describe_job_result``: QuickSight's DescribeDashboardSnapshotJobResult answer; each anonymous user is a
    recipient of the caller's organisation, with its files (``S3Results``: where each went, or why not)."""
    formats = job["formats"] or []
    users = [
        {
            "RecipientRef": d.recipient,
            "FileGroups": [{"Files": _files(job, table), "S3Results": _s3_results(d, formats)}],
            "ErrorInfo": None if d.error is None else {"ErrorMessage": d.error, "ErrorType": "DELIVERY_FAILED"},
        }
        for d in manifest.deliveries
    ]
    return {
        **_job_head(job),
        "Result": {"AnonymousUsers": users},
        "ErrorInfo": _error_info(job),
    }


def listed(job: dict[str, Any], table: str | None) -> dict[str, Any]:
    """One item of the list answer, as the sample's DynamoDB table holds a job."""
    formats = job["formats"] or []
    return {
        "dashboardId": job["report_id"],
        "jobId": job["job_id"],
        "jobStatus": snapshot_status(job),
        "sheetId": table,
        "outputFormat": FORMAT_NAMES.get(formats[0], formats[0].upper()) if len(formats) == 1 else None,
        "outputDestination": (job.get("output") or {}).get("prefix"),
        "jobParameters": quicksight_parameters(job.get("parameters")),
        "createdTime": job["created_at"],
        "completedTime": job["finished_at"],
    }
