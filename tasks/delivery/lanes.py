"""A large run's lanes, without Prefect: each takes recipients from its queue, delivers them in chunks and reports
each result (tasks/delivery/spread.py). The flow's lane task (tasks/delivery/prefect_tasks.py ``deliver_lane``) and a
worker process (tasks/delivery/worker.py, which never imports Prefect) both run them through ``run_lanes``.

Also ``keeper_for`` and ``attempt``, which a small run's per-recipient task shares.
"""

from __future__ import annotations

import contextvars
import logging
import queue
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from functools import partial

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
from tasks.delivery.services import DeliveryServices
from tasks.delivery.spread import Sink, Source

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


def run_lanes(
    plan: DeliveryPlan,
    services: DeliveryServices,
    audience: list[Recipient],
    lanes: list[tuple[int, Source, Sink]],
    logger: Logger,
) -> int:
    """Run each of ``lanes`` (its number, its queue, where it reports) on its own thread until the dispatcher stops
    it; how many deliveries they made. A process runs more than one lane so that it delivers while one lane waits for
    S3 or the ledger."""
    work = [partial(deliver_from, plan, services, audience, lane, todo, sink, logger) for lane, todo, sink in lanes]
    if len(work) == 1:
        return work[0]()
    with ThreadPoolExecutor(len(work) - 1, thread_name_prefix="bulletin-lane") as pool:
        others = [pool.submit(contextvars.copy_context().run, w) for w in work[1:]]
        made = work[0]()
        return made + sum(f.result() for f in others)


def keeper_for(plan: DeliveryPlan, services: DeliveryServices) -> AbstractContextManager[LeaseKeeper | None]:
    """The batch's or lane's lease keeper (tasks/delivery/leases.py), stopped when it ends; none for a dry run."""
    if services.store is None:
        return nullcontext()
    return LeaseKeeper(services.store, lease_seconds=plan.lease_seconds, clock=services.clock)


def attempt(
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


def deliver_from(
    plan: DeliveryPlan,
    services: DeliveryServices,
    audience: list[Recipient],
    lane: int,
    todo: Source,
    reports: Sink,
    logger: Logger,
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
                        delivery, transient = attempt(*args)
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
