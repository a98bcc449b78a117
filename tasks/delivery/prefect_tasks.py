"""The Prefect tasks that run the delivery pipeline (tasks/delivery/deliver.py) over a run's recipients.

``deliver_batch`` is a small run's task, one per recipient; ``deliver_lane`` a large run's long-lived lanes, each
fed one recipient at a time by the flow's dispatcher (tasks/delivery/spread.py). Either opens the channels once for all
the recipients it delivers (``OpenChannels``: one SMTP connection, say) and closes them when it ends.
"""

from __future__ import annotations

import contextvars
import logging
import queue
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime.task_run import get_run_count

from bulletin.errors import BulletinError, TransientError
from bulletin.models import Delivery, Recipient
from tasks.delivery.chunk import Rendered, render_claimed
from tasks.delivery.deliver import attempt_from, claim_requests, deliver_attempt
from tasks.delivery.intents import announce_chunk
from tasks.delivery.leases import LeaseKeeper
from tasks.delivery.marks import LaneLedger
from tasks.delivery.outcomes import Attempt, failed_delivery
from tasks.delivery.plan import DeliveryPlan
from tasks.delivery.registry import OpenChannels
from tasks.delivery.services import DeliveryServices, ServicesSpec, services_for
from tasks.delivery.spread import RETRY_DELAYS, Sink, Source, worker_queues


def deliver_each(
    plan: DeliveryPlan, services: DeliveryServices, recipients: list[Recipient], *, retry_left: bool = True
) -> list[Delivery]:
    """Deliver to each recipient in turn; one recipient's failure never stops the others.

    If every recipient failed for a transient reason, at least in part (the warehouse is down, the SMTP server
    said "try later"), raise TransientError so Prefect retries the task: the ledger makes the retry send only what
    has not been sent. With no ``retry_left`` (the task's last attempt) the deliveries are returned as they are, so
    what was sent is still reported.
    """
    deliveries: list[Delivery] = []
    transient = 0
    channels = services.channels.open()
    try:
        with keeper_for(plan, services) as keeper:
            for recipient in recipients:
                delivery, retry = _attempt(plan, services, recipient, channels, keeper)
                transient += retry
                deliveries.append(delivery)
    finally:
        channels.close()
    if retry_left and recipients and transient == len(recipients):
        raise TransientError(f"every delivery in this batch failed: {deliveries[0].error}")
    return deliveries


def keeper_for(plan: DeliveryPlan, services: DeliveryServices) -> AbstractContextManager[LeaseKeeper | None]:
    """The batch's or lane's lease keeper (tasks/delivery/leases.py), stopped when it ends; none for a dry run."""
    if services.store is None:
        return nullcontext()
    return LeaseKeeper(services.store, lease_seconds=plan.lease_seconds, clock=services.clock)


def _attempt(
    plan: DeliveryPlan,
    services: DeliveryServices,
    recipient: Recipient,
    channels: OpenChannels,
    keeper: LeaseKeeper | None,
    claimed: Attempt | None = None,
    rendered: Rendered | None = None,
) -> tuple[Delivery, bool]:
    """One recipient's delivery, or its failure as a Delivery; and whether a retry may help (some file, or the
    whole delivery, failed with a TransientError).

    Anything other than a BulletinError is raised: a bug, which the caller decides how to record.
    """
    try:
        return deliver_attempt(plan, services, recipient, channels, keeper, claimed, rendered)
    except TransientError as exc:
        return failed_delivery(recipient, exc), True
    except BulletinError as exc:
        return failed_delivery(recipient, exc), False


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry only errors that say a retry can help."""
    try:
        state.result()
    except TransientError:
        return True
    except BaseException:  # noqa: BLE001 - Prefect re-raises whatever the task raised; only its type matters here
        return False
    return False


@task(
    name="deliver-recipients",
    retries=len(RETRY_DELAYS),  # the same schedule as a large run's lanes (tasks/delivery/spread.py)
    retry_delay_seconds=list(RETRY_DELAYS),
    retry_condition_fn=_retry_transient,
    cache_policy=NO_CACHE,
    task_run_name="deliver {label}",
)
def deliver_batch(
    plan: DeliveryPlan, services: DeliveryServices | ServicesSpec, recipients: list[Recipient], label: str
) -> list[Delivery]:
    """A small run's task: one per recipient (``recipients`` holds one; Prefect retries it after a transient failure).

    ``services`` are the run's, or a spec to build this process's own (a worker process).
    """
    del label  # only in the task-run name
    if isinstance(services, ServicesSpec):
        services = services_for(services)
    # run_count is 1 on the first attempt: retries remain while it is at most the number of retries.
    return deliver_each(plan, services, recipients, retry_left=get_run_count() <= len(RETRY_DELAYS))


def deliver_from(
    plan: DeliveryPlan,
    services: DeliveryServices,
    audience: list[Recipient],
    lane: int,
    todo: Source,
    reports: Sink,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> int:
    """One lane (tasks/delivery/spread.py): say ready, then deliver each recipient the dispatcher sends until it sends
    None.

    The recipients the lane holds are claimed together, in one ledger transaction with the sent marks it kept back
    (tasks/delivery/marks.py), then rendered together from one warehouse scan (tasks/delivery/chunk.py), and their
    files' storing intents written in one more (tasks/delivery/intents.py) before the first is stored. Every
    recipient gets a result, whatever fails: a transient failure is marked so the dispatcher retries it, and an
    unexpected error is logged here (with its traceback, for the operator) and recorded as an internal error. Returns
    how many deliveries this lane made.
    """
    channels = services.channels.open()
    made = 0
    try:
        with keeper_for(plan, services) as keeper, _lane_ledger(plan, services, keeper) as ledger:
            reports.put(("ready", lane))
            stop = False
            while not stop:
                chunk, stop = next_chunk(todo, ledger)
                attempts = claim_chunk(plan, services, audience, chunk, ledger)
                rendered = render_claimed(plan, services, audience, attempts, logger)  # one scan for the chunk
                announce_chunk(plan, channels, audience, attempts, rendered, ledger)  # one intents commit
                for index, claimed in attempts:
                    recipient = audience[index]
                    try:
                        args = (plan, services, recipient, channels, keeper, claimed, rendered.get(index))
                        delivery, transient = _attempt(*args)
                    except Exception as exc:  # the edge: one recipient's bug must not stop the lane
                        logger.exception("delivery to %s failed unexpectedly", recipient.ref)
                        delivery, transient = failed_delivery(recipient, exc), False
                    finally:
                        if keeper is not None and claimed is not None:
                            keeper.release(claimed.todo.values())  # held since the chunk's claim
                    reports.put(("done", lane, index, delivery, transient))
                    made += 1
    finally:
        channels.close()
    return made


def next_chunk(todo: Source, ledger: LaneLedger | None) -> tuple[list[int], bool]:
    """Every recipient the dispatcher has handed this lane so far (waiting for one if there is none, after writing
    the kept sent marks: a lane never waits with marks unwritten), and whether it said stop (None)."""
    chunk: list[int] = []
    while True:
        try:
            index = todo.get(block=False)
        except queue.Empty:
            break
        if index is None:
            return chunk, True
        chunk.append(index)
    if chunk:
        return chunk, False
    if ledger is not None:
        ledger.flush()
    index = todo.get()
    return ([], True) if index is None else ([index], False)


def claim_chunk(
    plan: DeliveryPlan,
    services: DeliveryServices,
    audience: list[Recipient],
    chunk: list[int],
    ledger: LaneLedger | None,
) -> list[tuple[int, Attempt | None]]:
    """Each recipient of ``chunk`` with its attempt, all claimed in one transaction; None (each claims on its own,
    and fails there as it would have) for a dry run or when that transaction failed."""
    if ledger is None or not chunk:
        return [(index, None) for index in chunk]
    requests = [claim_requests(plan, audience[index]) for index in chunk]
    try:
        claims = ledger.claim([r for rs in requests for r in rs])
    except BulletinError:
        return [(index, None) for index in chunk]
    attempts: list[tuple[int, Attempt | None]] = []
    for index, rs in zip(chunk, requests, strict=True):
        mine, claims = claims[: len(rs)], claims[len(rs) :]
        attempt = attempt_from(plan, services, audience[index], mine)
        attempt.ledger = ledger
        attempts.append((index, attempt))
    return attempts


def _lane_ledger(
    plan: DeliveryPlan, services: DeliveryServices, keeper: LeaseKeeper | None
) -> AbstractContextManager[LaneLedger | None]:
    """The lane's batched ledger writes, their last flush when it ends; none for a dry run."""
    if services.store is None or keeper is None:
        return nullcontext()
    return LaneLedger(services.store, keeper, lease_seconds=plan.lease_seconds, clock=services.clock)


@task(name="deliver-lane", cache_policy=NO_CACHE, task_run_name="deliver ({label})")
def deliver_lane(
    plan: DeliveryPlan,
    services: DeliveryServices | ServicesSpec,
    audience: list[Recipient],
    lanes: list[int],
    queues: list[tuple[Source, Sink]] | None,
    label: str,
) -> int:
    """One or more of a large run's lanes: each delivers recipients one at a time as the flow's dispatcher sends
    them, on its own thread. Returns how many deliveries they made.

    In the flow's own threads ``services`` are the run's and ``queues`` the lanes'; in a worker process, a spec to
    build the process's own services, and the queues the process was started with. A worker process runs more than
    one lane so that it delivers while one lane waits for S3 or the ledger.
    """
    del label  # only in the task-run name
    if isinstance(services, ServicesSpec):
        services = services_for(services)
    pairs = queues if queues is not None else [worker_queues(lane) for lane in lanes]
    logger = get_run_logger()
    work = [
        partial(deliver_from, plan, services, audience, lane, todo, sink, logger)
        for lane, (todo, sink) in zip(lanes, pairs, strict=True)
    ]
    if len(work) == 1:
        return work[0]()
    with ThreadPoolExecutor(len(work) - 1, thread_name_prefix="bulletin-lane") as pool:
        others = [pool.submit(contextvars.copy_context().run, w) for w in work[1:]]
        made = work[0]()
        return made + sum(f.result() for f in others)
