"""Scheduled events as Prefect flow runs, made by the API: one run of deliver-scheduled-events per event and due time.

``ScheduledRunner.schedule(event_id, at)`` makes the run:

* the deployment ``deliver-scheduled-events/deliver-scheduled-events`` exists: ``run_deployment`` with
  ``scheduled_time=at`` and an idempotency key; a worker runs it when it is due, and the flow schedules its own
  retries through the deployment. Missed events: ``bulletin.edge.api.housekeeping`` starts a run of the deployment.
* no deployment (the demo, the tests, a plain ``bulletin serve``): the run is created through the Prefect client in
  state Scheduled at ``at`` (visible in the UI as such), and this process runs it at that time with Prefect's own
  engine (``run_flow``), in a small pool. Retries the flow returns get their runs the same way. Every
  ``sweep_seconds`` it also checks the store for due events that no run took (the API was down at their time; a run
  failed), and starts one run now to sweep them.

At shutdown, runs waiting for their time here are marked Cancelled in Prefect (their events stay scheduled in the
store, and the next sweep, of this process or the next one, sends them) and running ones are waited for.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.flow_engine import run_flow
from prefect.states import Cancelled, Scheduled

from bulletin.clock import Clock, utc_now
from bulletin.errors import BulletinError, TransientError
from bulletin.store import Store
from bulletin.store.scheduled_events import due_events, set_flow_run
from flows.deliver_scheduled_events import deliver_scheduled_events
from tasks.scheduled_events.runs import PREFECT_ERRORS, event_tags, find_deployment, schedule_through_deployment

logger = logging.getLogger(__name__)

#: A run here starts this long after its time, so the store (same clock) already sees the event as due.
START_MARGIN_SECONDS = 0.05


class ScheduledRunner:
    """Makes and (without the deployment) runs the flow runs of scheduled events. ``start`` it, ``shutdown`` it."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        sweep_seconds: float = 60.0,
        max_workers: int = 2,
    ) -> None:
        self._store = store
        self._clock = clock or utc_now
        self._sweep_seconds = sweep_seconds
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="bulletin-scheduled-event")
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, FlowRun]] = []
        self._order = itertools.count()
        self._cancelled: set[UUID] = set()
        self._active = 0  # runs handed to the pool and not finished
        self._closed = False
        self._next_sweep = time.monotonic()  # the first check is at start
        self._thread = threading.Thread(target=self._loop, name="bulletin-scheduled-events", daemon=True)

    # --- the API's side ---

    def start(self) -> None:
        self._thread.start()

    def schedule(self, event_id: str, at: datetime) -> UUID:
        """The flow run for ``event_id`` at ``at`` (through the deployment, or here); TransientError if Prefect
        cannot be reached."""
        deployment_id = find_deployment()
        if deployment_id is not None:
            return schedule_through_deployment(deployment_id, event_id, at)
        return self._schedule_here([event_id], at)

    def cancel(self, flow_run_id: UUID) -> None:
        """Best effort: the run will not start (here), and is marked Cancelled in Prefect. Should it start anyway
        (a worker already took it), it finds its event cancelled and sends nothing."""
        with self._cond:
            if any(run.id == flow_run_id for _, _, run in self._heap):
                self._cancelled.add(flow_run_id)
                self._cond.notify()
        _mark_cancelled([flow_run_id], "its scheduled event was cancelled")

    def shutdown(self) -> None:
        """Stop: cancel the runs waiting for their time here, wait for the running ones."""
        with self._cond:
            self._closed = True
            waiting = [run.id for _, _, run in self._heap if run.id not in self._cancelled]
            self._heap.clear()
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if waiting:
            _mark_cancelled(waiting, "the API stopped before this run's time; the next sweep sends its event")
        self._pool.shutdown(wait=True)

    # --- here ---

    def _schedule_here(self, event_ids: list[str], at: datetime) -> UUID:
        if self._closed:
            raise TransientError("the API is stopping; try again later")
        try:
            with get_client(sync_client=True) as client:
                flow_run = client.create_flow_run(
                    deliver_scheduled_events,
                    parameters={"event_ids": event_ids},
                    state=Scheduled(scheduled_time=at),
                    tags=event_tags(event_ids),
                )
        except PREFECT_ERRORS as exc:
            raise TransientError("Prefect is not reachable; try again later") from exc
        with self._cond:
            heapq.heappush(self._heap, (at.timestamp() + START_MARGIN_SECONDS, next(self._order), flow_run))
            self._cond.notify()
        return flow_run.id

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                due = self._take_due()
                sweep = not due and time.monotonic() >= self._next_sweep
                if not due and not sweep:
                    self._cond.wait(timeout=self._wait_seconds())
                    continue
            for flow_run in due:
                self._submit(flow_run)
            if sweep:
                self._next_sweep = time.monotonic() + self._sweep_seconds
                self._sweep()

    def _take_due(self) -> list[FlowRun]:
        due = []
        while self._heap and self._heap[0][0] <= time.time():
            _, _, flow_run = heapq.heappop(self._heap)
            if flow_run.id in self._cancelled:
                self._cancelled.discard(flow_run.id)
            else:
                due.append(flow_run)
        return due

    def _wait_seconds(self) -> float:
        until_sweep = self._next_sweep - time.monotonic()
        until_run = self._heap[0][0] - time.time() if self._heap else until_sweep
        return max(0.01, min(until_sweep, until_run))

    def _submit(self, flow_run: FlowRun) -> None:
        with self._cond:
            self._active += 1
        try:
            self._pool.submit(self._execute, flow_run)
        except RuntimeError:  # the pool was shut down meanwhile: the run stays Scheduled, its event due
            with self._cond:
                self._active -= 1

    def _execute(self, flow_run: FlowRun) -> None:
        try:
            result: Any = run_flow(deliver_scheduled_events, flow_run=flow_run, return_type="result")
        except Exception:  # the edge of a worker thread: the engine has recorded the run's state; only log
            logger.exception("scheduled-event flow run %s ended with an error", flow_run.id)
            result = None
        finally:
            with self._cond:
                self._active -= 1
        if isinstance(result, dict) and not result.get("follow_ups_scheduled", True):
            for follow_up in result.get("follow_ups", []):
                self._follow_up(str(follow_up["event_id"]), datetime.fromisoformat(str(follow_up["at"])))

    def _follow_up(self, event_id: str, at: datetime) -> None:
        try:
            run_id = self.schedule(event_id, at)
            set_flow_run(self._store, event_id, str(run_id), now=self._clock())
        except BulletinError as error:  # the event stays scheduled in the store: the next sweep sends it
            logger.warning("no run scheduled for the retry of %s (%s): the next sweep sends it", event_id, error)

    def _sweep(self) -> None:
        """Start one run now if events are due that no run took (only here: the deployment has its own schedule)."""
        with self._cond:
            if self._active or self._closed:
                return
        try:
            if not due_events(self._store, now=self._clock(), limit=1):
                return
            if find_deployment() is not None:
                return
            self._schedule_here([], self._clock())
        except BulletinError as error:
            logger.warning("scheduled-event sweep skipped: %s", error)


def _mark_cancelled(flow_run_ids: list[UUID], message: str) -> None:
    try:
        with get_client(sync_client=True) as client:
            for run_id in flow_run_ids:
                client.set_flow_run_state(run_id, Cancelled(message=message), force=True)
    except PREFECT_ERRORS:
        logger.warning("could not mark %d scheduled-event flow run(s) Cancelled", len(flow_run_ids), exc_info=True)
