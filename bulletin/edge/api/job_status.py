"""A job's status from its Prefect flow run's state: pure, so every mapping is a unit test.

=====================================================  ===========
flow run                                                job
=====================================================  ===========
none yet, SCHEDULED, PENDING, PAUSED                    QUEUED
RUNNING but waiting for a report-run slot               QUEUED      (``tasks.delivery.capacity.is_waiting_for_slot``)
RUNNING                                                 RUNNING
COMPLETED named "Partial"                               PARTIAL
COMPLETED                                               COMPLETED
FAILED, CRASHED                                         FAILED
CANCELLED (also "Missed", "Superseded"), CANCELLING     CANCELLED
=====================================================  ===========
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.PARTIAL, JobStatus.FAILED, JobStatus.CANCELLED})

_BY_TYPE = {
    "SCHEDULED": JobStatus.QUEUED,
    "PENDING": JobStatus.QUEUED,
    "PAUSED": JobStatus.QUEUED,
    "RUNNING": JobStatus.RUNNING,
    "COMPLETED": JobStatus.COMPLETED,
    "FAILED": JobStatus.FAILED,
    "CRASHED": JobStatus.FAILED,
    "CANCELLED": JobStatus.CANCELLED,
    "CANCELLING": JobStatus.CANCELLED,
}


def job_status(state_type: str | None, state_name: str | None = None, *, waiting_for_slot: bool = False) -> JobStatus:
    """The job status of a flow run in state ``state_type`` (Prefect's StateType value) named ``state_name``."""
    if state_type is None:
        return JobStatus.QUEUED
    status = _BY_TYPE.get(state_type.upper(), JobStatus.QUEUED)
    if status is JobStatus.RUNNING and waiting_for_slot:
        return JobStatus.QUEUED
    if status is JobStatus.COMPLETED and state_name == "Partial":
        return JobStatus.PARTIAL
    return status
