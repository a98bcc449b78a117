"""The Prefect tasks that run the delivery pipeline (tasks/delivery/deliver.py) over a run's recipients.

``deliver_batch`` is a small run's task, one per recipient; ``deliver_lane`` a large run's long-lived lanes on the
flow's threads (tasks/delivery/lanes.py), each fed one recipient at a time by the flow's dispatcher
(tasks/delivery/spread.py). Either opens the channels once for all the recipients it delivers (``OpenChannels``: one
SMTP connection, say) and closes them when it ends.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime.task_run import get_run_count

from bulletin.errors import TransientError
from bulletin.models import Delivery, Recipient
from tasks.delivery.lanes import attempt, keeper_for, run_lanes
from tasks.delivery.plan import DeliveryPlan
from tasks.delivery.services import DeliveryServices
from tasks.delivery.spread import RETRY_DELAYS, Sink, Source


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
                delivery, retry = attempt(plan, services, recipient, channels, keeper)
                transient += retry
                deliveries.append(delivery)
    finally:
        channels.close()
    if retry_left and recipients and transient == len(recipients):
        raise TransientError(f"every delivery in this batch failed: {deliveries[0].error}")
    return deliveries


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
    plan: DeliveryPlan, services: DeliveryServices, recipients: list[Recipient], label: str
) -> list[Delivery]:
    """A small run's task: one per recipient (``recipients`` holds one; Prefect retries it after a transient failure),
    on the run's services."""
    del label  # only in the task-run name
    # run_count is 1 on the first attempt: retries remain while it is at most the number of retries.
    return deliver_each(plan, services, recipients, retry_left=get_run_count() <= len(RETRY_DELAYS))


@task(name="deliver-lane", cache_policy=NO_CACHE, task_run_name="deliver ({label})")
def deliver_lane(
    plan: DeliveryPlan,
    services: DeliveryServices,
    audience: list[Recipient],
    lanes: list[int],
    queues: list[tuple[Source, Sink]],
    label: str,
) -> int:
    """One of a large run's lanes on the flow's own task threads (tasks/delivery/lanes.py): it delivers recipients as
    the flow's dispatcher sends them, until it sends None. Returns how many deliveries it made. A worker process runs
    its lanes without Prefect (tasks/delivery/worker.py)."""
    del label  # only in the task-run name
    pairs = [(lane, todo, sink) for lane, (todo, sink) in zip(lanes, queues, strict=True)]
    return run_lanes(plan, services, audience, pairs, get_run_logger())
