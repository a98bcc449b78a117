"""Capacity: at most ``BULLETIN_MAX_CONCURRENT_RUNS`` report runs deliver at once, the rest wait their turn.

The cap is a Prefect global concurrency limit, ``bulletin-report-runs``, so it holds across every process that talks
to one Prefect server: workers, ``bulletin run``, the HTTP API. The deliver-report flow holds one slot around its
delivery work (QuickSight's "concurrent jobs, queue the rest").

What Prefect 3.8.8 does, read in ``prefect/concurrency/``: ``concurrency(name)`` for a name with no limit does not
wait; it logs a warning ("do not exist - skipping acquisition") and runs uncapped. With ``strict=True`` it raises
instead. So each run first creates the limit or sets it to the setting's value (``ensure_run_limit``: the setting is
the one source of the number), then acquires strictly: a limit deleted in between is an error, never a silently
uncapped run. ``strict`` would also end the run when one lease renewal fails; that is turned off, because a delivery
half done must not be killed by one failed heartbeat. A limit switched to inactive in the Prefect UI lets every run
through (Prefect's meaning of inactive); the value is re-set at each run, the switch is left alone.

A run waits as long as it takes, Prefect polling with the server's Retry-After (at most 30 s by default). One still
without a slot after ``WAIT_NOTICE_SECONDS`` logs that it waits and labels its flow run ``bulletin.slot=waiting``
(``is_waiting_for_slot`` reads that, so the HTTP API can show the run as QUEUED). A bounded first try would know at
once, but Prefect's acquisition service logs every refused try (``max_retries=0`` or a timeout) at ERROR. Prefect
renews the lease of a held slot; the slot of a crashed process comes back when its lease expires (``LEASE_SECONDS``).

The slot costs a run as little time as it can (issue 14: it took 0.5-1.0 s to release). Prefect's ``concurrency()``
starts a lease-renewal thread that at once builds an API client and renews the lease it has just been granted, and
its exit waits (up to 2 s) for that thread: a run shorter than that first renewal waited for it at the end, before
the flow could return and the command exit. ``_slot`` takes and releases the slot with the same Prefect calls and
events, but renews from a thread that first sleeps a third of the lease: a short run never renews, and releasing is
one API call. And the run gives the slot back as soon as its deliveries are done (``HeldSlot.release_soon``), from a
background thread while it writes its manifest, artifacts and events: the next run may start delivering meanwhile,
and the release is no longer on the way to the run's end.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder, FlowRun
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.concurrency._asyncio import _discard_cleanup_lease
from prefect.concurrency._events import emit_concurrency_acquisition_events, emit_concurrency_release_events
from prefect.concurrency._sync import acquire_concurrency_slots_with_lease, release_concurrency_slots_with_lease
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound, PrefectHTTPStatusError

from bulletin.errors import TransientError

#: The Prefect global concurrency limit every report run takes one slot of.
RUN_LIMIT = "bulletin-report-runs"
#: Flow-run label saying where a run stands with its slot: ``waiting`` or ``held``.
SLOT_LABEL = "bulletin.slot"
WAITING = "waiting"
HELD = "held"
#: A held slot's lease; Prefect renews it while the run lives, and frees the slot this long after a crash.
LEASE_SECONDS = 300.0
#: The lease is renewed this often: a third of it, so a failed renewal has another chance before it expires.
RENEW_EVERY_SECONDS = LEASE_SECONDS / 3
#: A run still without a slot after this long logs that it waits, and labels its flow run.
WAIT_NOTICE_SECONDS = 2.0
#: ``extra`` key on the slot's log records (``waiting``, ``held``, ``releasing``), for whoever watches the logs.
LOG_KEY = "bulletin_slot"

Logger = logging.Logger | logging.LoggerAdapter[Any]


def ensure_run_limit(client: SyncPrefectClient, limit: int, *, name: str = RUN_LIMIT) -> GlobalConcurrencyLimitResponse:
    """Create the limit, or set it to ``limit`` if it holds another value; return it as it stands."""
    try:
        try:
            current = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another run created it first: fine, its value is set below
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            current = client.read_global_concurrency_limit_by_name(name)
        if current.limit != limit:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit))
            current = current.model_copy(update={"limit": limit})
    except (httpx.HTTPError, ObjectNotFound) as exc:
        raise TransientError(f"could not set the Prefect concurrency limit {name!r} to {limit}: {exc}") from exc
    return current


class HeldSlot:
    """A report-run slot held by the block of ``report_run_slot``. ``release_soon`` gives it back from a background
    thread while the run finishes its own bookkeeping (its deliveries are done: the next run may start delivering);
    the block's end waits for that release, or releases the slot itself if nobody asked earlier. Released once."""

    def __init__(self, release: Callable[[], None], logger: Logger) -> None:
        self._release = release
        self._logger = logger
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._released = False

    def release_soon(self) -> None:
        with self._lock:
            if self._thread is not None or self._released:
                return
            self._logger.info("Releasing the report-run slot", extra={LOG_KEY: "releasing"})
            context = contextvars.copy_context()  # Prefect's settings and client context, as in the run's thread
            self._thread = threading.Thread(
                target=context.run, args=(self._release,), daemon=True, name="bulletin-slot-release"
            )
            self._thread.start()

    def _end(self) -> None:
        with self._lock:
            thread, self._released = self._thread, True
        if thread is not None:
            thread.join()
            return
        self._logger.info("Releasing the report-run slot", extra={LOG_KEY: "releasing"})
        self._release()


@contextmanager
def report_run_slot(
    limit: int, *, logger: Logger, flow_run_id: UUID | None = None, name: str = RUN_LIMIT
) -> Iterator[HeldSlot]:
    """Hold one slot of the report-run limit (set to ``limit`` first) for the duration of the block, or until
    ``HeldSlot.release_soon``.

    A run still without a slot after ``WAIT_NOTICE_SECONDS`` logs that it waits, and labels its flow run (when it
    has one) until it gets one.
    """
    with get_client(sync_client=True) as client:
        current = ensure_run_limit(client, limit, name=name)
    holder = ConcurrencyLeaseHolder(type="flow_run", id=flow_run_id) if flow_run_id else None
    notice = _WaitNotice(logger, flow_run_id, current.limit)
    timer = threading.Timer(WAIT_NOTICE_SECONDS, notice.announce)
    timer.daemon = True
    timer.start()
    try:
        release = _slot(name, holder)
    except ConcurrencySlotAcquisitionError as exc:
        raise TransientError(f"could not take a slot of the Prefect concurrency limit {name!r}: {exc}") from exc
    finally:
        timer.cancel()
        notice.settle()
    logger.info("Holding a report-run slot (%s, %d at once)", name, current.limit, extra={LOG_KEY: HELD})
    slot = HeldSlot(release, logger)
    try:
        yield slot
    finally:
        slot._end()


def cancel_requested(flow_run_id: UUID) -> bool:
    """Whether someone asked to cancel this run while it waited for its slot (``DELETE /v1/jobs/{id}``, the UI).

    A worker stops a cancelled run's process itself; a run that the API or a script executes in its own process
    is only marked Cancelling, so a queued run looks once, before it delivers anything.
    """
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
    except httpx.HTTPError:
        return False  # the API is unreachable: the run goes on, as it would have without this look
    return state is not None and (state.is_cancelling() or state.is_cancelled())


def is_waiting_for_slot(flow_run: FlowRun) -> bool:
    """Whether a deliver-report flow run is running but does not hold its report-run slot yet (show it as QUEUED):
    every run is labelled ``held`` once it has its slot, before it delivers anything."""
    state = flow_run.state
    return state is not None and state.is_running() and flow_run.labels.get(SLOT_LABEL) != HELD


def _slot(name: str, holder: ConcurrencyLeaseHolder | None) -> Callable[[], None]:
    """Take one slot of ``name``; the function that gives it back. What ``prefect.concurrency.sync.concurrency(name,
    occupy=1, strict=True, raise_on_lease_renewal_failure=False)`` does, with the lease renewed by ``_renew_lease``
    (see the module docstring). Prefect records the lease on its concurrency context when it grants it, so a
    cancelled run's slot is still released when that context ends."""
    granted = acquire_concurrency_slots_with_lease([name], 1, lease_duration=LEASE_SECONDS, strict=True, holder=holder)
    if not granted.limits:  # the limit is inactive: Prefect lets the run through without a slot
        return lambda: None
    events = emit_concurrency_acquisition_events(granted.limits, 1)
    stop = threading.Event()
    threading.Thread(
        target=_renew_lease, args=(granted.lease_id, stop), daemon=True, name=f"bulletin-slot-lease-{granted.lease_id}"
    ).start()

    def release() -> None:
        stop.set()  # the renewer sleeps on this: it ends at once, nothing waits for it
        release_concurrency_slots_with_lease(granted.lease_id)
        _discard_cleanup_lease(granted.lease_id)
        emit_concurrency_release_events(granted.limits, 1, events)

    return release


def _renew_lease(lease_id: UUID, stop: threading.Event) -> None:
    """Renew the lease every ``RENEW_EVERY_SECONDS`` until ``stop``; the first renewal only after that long. A failed
    renewal is logged and tried again next time: a delivery half done is never stopped for it (what
    ``raise_on_lease_renewal_failure=False`` means to Prefect)."""
    log = logging.getLogger(__name__)
    while not stop.wait(RENEW_EVERY_SECONDS):
        try:
            with get_client(sync_client=True) as client:
                client.renew_concurrency_lease(lease_id=lease_id, lease_duration=LEASE_SECONDS)
        except (httpx.HTTPError, PrefectHTTPStatusError, ObjectNotFound) as exc:
            if not stop.is_set():
                log.warning("could not renew the report-run slot's lease %s: %s", lease_id, exc)


class _WaitNotice:
    """Says once that a run waits for its slot, then that it got one. ``announce`` runs on a timer thread; the lock
    keeps it from announcing a wait that has just ended."""

    def __init__(self, logger: Logger, flow_run_id: UUID | None, limit: int) -> None:
        self._logger = logger
        self._flow_run_id = flow_run_id
        self._limit = limit
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._settled = False
        self._announced = False

    def announce(self) -> None:
        with self._lock:
            if self._settled:
                return
            self._announced = True
            _label(self._flow_run_id, WAITING, self._logger)  # first, so whoever reads the log finds the label
            self._logger.info(
                "Waiting for a report-run slot (at most %d report runs at once: BULLETIN_MAX_CONCURRENT_RUNS); this "
                "run starts when one is free",
                self._limit,
                extra={LOG_KEY: WAITING},
            )

    def settle(self) -> None:
        """The wait is over: label the run as holding its slot (every run, so a run not yet labelled so is still
        queued to whoever asks), and say how long it waited if it said it waits."""
        with self._lock:
            self._settled = True
            announced = self._announced
        _label(self._flow_run_id, HELD, self._logger)
        if announced:
            self._logger.info("Got a report-run slot after %.0f s", time.monotonic() - self._started)


def _label(flow_run_id: UUID | None, value: str, logger: Logger) -> None:
    """Best effort: the label only informs; a failure to set it must not stop the run."""
    if flow_run_id is None:
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run_labels(flow_run_id, {SLOT_LABEL: value})
    except httpx.HTTPError as exc:
        logger.debug("could not label flow run %s %s=%s: %s", flow_run_id, SLOT_LABEL, value, exc)
