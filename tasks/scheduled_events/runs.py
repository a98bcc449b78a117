"""Scheduled events as Prefect flow runs: each attempt of an event is a run of deliver-scheduled-events scheduled
for the attempt's time.

With the ``deliver-scheduled-events/deliver-scheduled-events`` deployment, runs are created through it
(``run_deployment(..., scheduled_time=..., timeout=0)``) and a worker runs them when they are due; an idempotency
key per event and attempt means a repeated request never makes a second run. Without it (the demo, the tests, a
plain ``bulletin serve``) the API process creates and runs them itself (``bulletin.edge.api.scheduled_runs``).

``schedule_follow_ups`` is the flow's side: after a pass, the events left scheduled for a retry get their next run
through the deployment when it exists; otherwise the flow returns them to whoever runs it in-process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from bulletin.errors import BulletinError, TransientError
from bulletin.store.db import Store
from bulletin.store.scheduled_events import set_flow_run

logger = logging.getLogger(__name__)

FLOW_NAME = "deliver-scheduled-events"
DEPLOYMENT = f"{FLOW_NAME}/{FLOW_NAME}"
#: Every run made for a scheduled event carries this tag, and ``scheduled-event:<id>`` when it is for one event.
TAG = "scheduled-event"

PREFECT_ERRORS = (PrefectHTTPStatusError, httpx.HTTPError, OSError)


def event_tags(event_ids: Sequence[str]) -> list[str]:
    return [TAG, *(f"{TAG}:{event_id}" for event_id in event_ids)]


def idempotency_key(event_id: str, at: datetime) -> str:
    """One run per event and due time (its time, then each retry's), however often it is asked for."""
    return f"{TAG}:{event_id}:{at.isoformat()}"


def find_deployment() -> UUID | None:
    """The deployment's id, None when it does not exist; TransientError when Prefect cannot be asked."""
    try:
        with get_client(sync_client=True) as client:
            return client.read_deployment_by_name(DEPLOYMENT).id
    except ObjectNotFound:
        return None
    except PREFECT_ERRORS as exc:
        raise TransientError("Prefect is not reachable; try again later") from exc


def schedule_through_deployment(deployment_id: UUID, event_id: str, at: datetime) -> UUID:
    """A run of the deployment for ``event_id``, scheduled at ``at``; its id."""
    start: Any = run_deployment  # async-dispatched: `_sync` keeps it synchronous in any thread or loop
    try:
        flow_run: FlowRun = start(
            deployment_id,
            parameters={"event_ids": [event_id]},
            scheduled_time=at,
            timeout=0,
            tags=event_tags([event_id]),
            idempotency_key=idempotency_key(event_id, at),
            as_subflow=False,
            _sync=True,
        )
    except PREFECT_ERRORS as exc:
        raise TransientError("Prefect is not reachable; try again later") from exc
    return flow_run.id


@task(name="schedule-follow-ups", cache_policy=NO_CACHE, persist_result=False)
def schedule_follow_ups(store: Store, follow_ups: dict[str, datetime], now: datetime) -> bool:
    """Schedule the next run of each event left for a retry, through the deployment, and note it on the event (so a
    cancel cancels it). False when there is no deployment (the in-process runner that ran this flow schedules them)
    or Prefect failed (the events stay due in the store, and the next sweep sends them)."""
    if not follow_ups:
        return True
    try:
        deployment_id = find_deployment()
        if deployment_id is None:
            return False
        for event_id, at in follow_ups.items():
            run_id = schedule_through_deployment(deployment_id, event_id, at)
            set_flow_run(store, event_id, str(run_id), now=now)
    except BulletinError as error:
        logger.warning("retries of %d scheduled event(s) left to the next sweep: %s", len(follow_ups), error)
        return False
    return True
