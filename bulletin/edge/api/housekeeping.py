"""Housekeeping runs on demand: a run of deliver-webhooks or deliver-scheduled-events only when there is work for it.

Both deployments used to run every minute, due work or not: about 2,880 runs a day in the Prefect UI, where a person
looks for their report runs. They have no schedule now. Instead the API process looks at the state store every
``interval`` seconds (two indexed SELECTs on this machine's database, no call to Prefect) and, only when it finds
due work, starts one run of the deployment that does it, unless one is already under way:

* ``deliver-webhooks``: a webhook message is due (a retry whose time has come, a redelivery, a first attempt that
  the report run could not make, a message whose dispatcher died). Retries go out ``interval`` seconds (plus the
  worker's poll) after their time at most; the every-minute schedule took up to a minute.
* ``deliver-scheduled-events``: an event has been due for ``missed_after`` seconds and no run took it. Every event
  gets its own run scheduled for its time when it is created (``bulletin.edge.api.scheduled_runs``); this only catches
  the ones whose run was lost, as the every-minute sweep did.

"Under way" is a run of that deployment that is Pending, Running, or Scheduled for now or earlier (Late): it will
sweep every due item anyway, so a stopped worker makes one waiting run, not one per look. Without the deployment
(the demo, ``bulletin serve --only api`` against a Prefect with no deployments) nothing is started here: webhook
retries are then ``bulletin webhooks dispatch``'s, and missed scheduled events the runner's own sweep. Nor without
a Prefect server (no PREFECT_API_URL): no worker can take runs from Prefect's temporary ephemeral one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL

from bulletin.clock import Clock
from bulletin.errors import BulletinError
from bulletin.store import Store
from bulletin.store.scheduled_events import due_events
from bulletin.store.webhooks import due_messages

logger = logging.getLogger(__name__)

#: How often the store is looked at. A due webhook retry waits at most this long (plus the worker's 10 s poll).
INTERVAL_SECONDS = 10.0
#: A scheduled event due this long with no run that took it was missed (its own run normally takes it at once).
MISSED_AFTER_SECONDS = 60.0
#: A tag on every run started here, so they can be told from scheduled report runs in the UI.
TAG = "housekeeping"

PREFECT_ERRORS = (PrefectHTTPStatusError, httpx.HTTPError, OSError)


@dataclass(frozen=True)
class Chore:
    """One deployment and the question whether the store holds work for it now."""

    deployment: str
    has_work: Callable[[Store, datetime], bool]


def webhooks_due(store: Store, now: datetime) -> bool:
    return bool(due_messages(store, now=now, limit=1))


def scheduled_events_missed(store: Store, now: datetime) -> bool:
    return bool(due_events(store, now=now - timedelta(seconds=MISSED_AFTER_SECONDS), limit=1))


CHORES = (
    Chore("deliver-webhooks/deliver-webhooks", webhooks_due),
    Chore("deliver-scheduled-events/deliver-scheduled-events", scheduled_events_missed),
)


def slot_key(deployment: str, now: datetime, interval: float) -> str:
    """One run per deployment and look, however many API processes look at the same store at the same time."""
    return f"{TAG}:{deployment}:{int(now.timestamp() // max(interval, 1.0))}"


class Housekeeper:
    """The thread that looks for due work and starts the runs that do it. ``start`` it, ``stop`` it."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        interval: float = INTERVAL_SECONDS,
        chores: tuple[Chore, ...] = CHORES,
    ) -> None:
        self._store = store
        self._clock = clock
        self._interval = interval
        self._chores = chores
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bulletin-housekeeping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            for chore in self._chores:
                try:
                    self.look(chore)
                except (BulletinError, *PREFECT_ERRORS) as error:  # the next look tries again
                    logger.warning("housekeeping for %s skipped: %s", chore.deployment, error)

    def look(self, chore: Chore) -> UUID | None:
        """Start a run of ``chore``'s deployment if the store has work for it and none is under way; its id."""
        now = self._clock()
        if not chore.has_work(self._store, now) or not PREFECT_API_URL.value():
            # Without a Prefect server (ephemeral mode) no worker could run a deployment's run: start nothing.
            return None
        with get_client(sync_client=True) as client:
            try:
                deployment_id = client.read_deployment_by_name(chore.deployment).id
            except ObjectNotFound:
                return None
            under_way = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING, StateType.SCHEDULED])
                    ),
                    expected_start_time=FlowRunFilterExpectedStartTime(before_=now),
                ),
                limit=1,
            )
        if under_way:
            return None
        start: Any = run_deployment  # async-dispatched: `_sync` keeps it synchronous in this thread
        flow_run = start(
            deployment_id,
            timeout=0,
            tags=[TAG],
            idempotency_key=slot_key(chore.deployment, now, self._interval),
            as_subflow=False,
            _sync=True,
        )
        run_id: UUID = flow_run.id
        logger.info("housekeeping: started %s (run %s): there is due work", chore.deployment, run_id)
        return run_id
