"""A large run's shards: each one a flow run of the ``deliver-shard`` deployment, which any worker of the pool takes.

The run (the parent) cuts its audience into shards (``tasks/delivery/shards.py``), starts one flow run per shard
with Prefect's ``run_deployment`` as its subflow (the UI shows them under the run), and waits. A shard whose flow
run crashed (its worker died: Prefect's heartbeat automation marks it Crashed, ``bulletin deployments
automations``), failed, or ended leaving recipients unfinished is started again, up to ``BULLETIN_SHARD_RETRIES``
times, once the claims it left have lapsed: the ledger makes the new attempt skip what the old one sent. When every
shard is over, the run's deliveries are read from the ledger, so its one manifest, its events and its summary say
what really went out.

Sharding is Prefect's own machinery (a deployment, a work pool, workers), not a scheduler of Bulletin's: a shard
waits in the pool until a worker is free, and a worker on another machine takes it as readily as one on this.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, StateType, WorkerStatus
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelling
from pydantic_core import to_jsonable_python

from bulletin.models import Delivery, Recipient
from bulletin.store import Store, run_rows
from tasks.delivery.capacity import cancel_requested
from tasks.delivery.plan import DeliveryPlan
from tasks.delivery.shards import claims_lapse_at, deliveries_from_ledger, split_audience, unfinished

SHARD_FLOW = "deliver-shard"
SHARD_DEPLOYMENT = f"{SHARD_FLOW}/{SHARD_FLOW}"
#: How often the run reads its shards' states. One request for all of them.
POLL_SECONDS = 2.0
#: Seconds before a shard's second, third... attempt, at the least: a shard that failed because something it needs
#: was briefly unavailable gets a moment. An attempt also waits for the claims the last one left to lapse.
RETRY_DELAYS = (5.0, 30.0, 120.0)
#: How often a run says which shards are still waiting for a worker.
WAITING_NOTICE_SECONDS = 60.0


@dataclass
class Shard:
    """One shard across its attempts: its recipients, its current flow run, and what became of it."""

    number: int  # from 1
    recipients: list[Recipient]
    attempts: int = 0
    flow_run_id: uuid.UUID | None = None
    retry_at: float | None = None  # time.monotonic() of the next attempt, when one is due
    over: bool = False
    history: list[str] = field(default_factory=list)  # each attempt's final state, for the log


def shard_deployment_ready() -> str | None:
    """Why this run cannot deliver through shards, or None when it can: the pool has the deliver-shard deployment
    (``prefect deploy --all`` creates it) and at least one worker of its pool is online. Otherwise a large run
    delivers in its own flow run, as before sharding, rather than wait for shards no worker will take."""
    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(SHARD_DEPLOYMENT)
            pool = deployment.work_pool_name
            if pool is None:
                return f"the {SHARD_DEPLOYMENT} deployment has no work pool"
            workers = client.read_workers_for_work_pool(pool)
    except ObjectNotFound:
        return f"there is no {SHARD_DEPLOYMENT} deployment"
    except httpx.HTTPError as exc:
        return f"the Prefect API did not answer ({type(exc).__name__})"
    if not any(w.status == WorkerStatus.ONLINE for w in workers):
        return f"no worker of work pool {pool!r} is online"
    return None


def deliver_in_shards(
    plan: DeliveryPlan,
    store: Store,
    audience: list[Recipient],
    *,
    shard_size: int,
    retries: int,
    scheduled: bool,
    parent_id: uuid.UUID | None,
    clock: Callable[[], float] = time.monotonic,
) -> list[Delivery]:
    """Deliver ``audience`` through shards of at most ``shard_size``; every recipient's Delivery, from the ledger."""
    logger = get_run_logger()
    shards = [Shard(i + 1, part) for i, part in enumerate(split_audience(audience, shard_size))]
    logger.info("Delivering to %d recipients in %d shards (%s)", len(audience), len(shards), SHARD_DEPLOYMENT)
    base = _shard_parameters(plan, scheduled, len(shards))
    for shard in shards:
        _start(shard, base, plan)
    noticed = clock()
    while not all(s.over for s in shards):
        time.sleep(POLL_SECONDS)
        if parent_id is not None and cancel_requested(parent_id):
            _cancel_running(shards)
            logger.warning("cancelled: the shards still running were asked to stop")
            break
        _review(shards, _read_states(shards), store, plan, retries, clock)
        for shard in shards:
            if shard.retry_at is not None and clock() >= shard.retry_at:
                _start(shard, base, plan)
        if clock() - noticed >= WAITING_NOTICE_SECONDS:
            noticed = clock()
            _notice_waiting(shards)
    return deliveries_from_ledger(run_rows(store, plan.run_key), audience, plan.run_id)


def _shard_parameters(plan: DeliveryPlan, scheduled: bool, count: int) -> dict[str, Any]:
    """What every shard's flow run is given besides its recipients: the parent's run, key, start and resolved
    parameters, so each shard claims, names and scopes its files exactly as the run itself would have."""
    return {
        "report_id": plan.report.id,
        "run_id": plan.run_id,
        "run_key": plan.run_key,
        "started_at": plan.started_at.isoformat(),
        "formats": list(plan.formats),
        "parameters": to_jsonable_python(plan.params),
        "output_prefix": plan.output_prefix,
        "scheduled": scheduled,
        "shards": count,
    }


def _start(shard: Shard, base: dict[str, Any], plan: DeliveryPlan) -> None:
    """Start the shard's next attempt as a subflow of this run; the idempotency key makes a repeated request (the
    run itself retried by Prefect) return the same flow run instead of a second one."""
    shard.attempts += 1
    shard.retry_at = None
    count = base["shards"]
    run = run_deployment(  # sync here: this flow is synchronous
        SHARD_DEPLOYMENT,
        parameters={**base, "shard": shard.number, "recipients": [r.ref for r in shard.recipients]},
        flow_run_name=f"{plan.report.id}-shard-{shard.number}-of-{count}-try-{shard.attempts}",
        timeout=0,
        tags=["bulletin", "shard", plan.report.id],
        idempotency_key=f"{plan.run_id}:shard-{shard.number}:try-{shard.attempts}",
        as_subflow=True,
    )
    assert isinstance(run, FlowRun)
    shard.flow_run_id = run.id
    get_run_logger().info(
        "shard %d/%d (%d recipients), attempt %d: flow run %s",
        shard.number,
        count,
        len(shard.recipients),
        shard.attempts,
        run.id,
    )


def _read_states(shards: list[Shard]) -> dict[uuid.UUID, FlowRun]:
    """The current flow run of every shard still going, read in one request."""
    ids = [s.flow_run_id for s in shards if not s.over and s.retry_at is None and s.flow_run_id is not None]
    if not ids:
        return {}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids))
    return {run.id: run for run in runs}


def _review(
    shards: list[Shard],
    runs: dict[uuid.UUID, FlowRun],
    store: Store,
    plan: DeliveryPlan,
    retries: int,
    clock: Callable[[], float],
) -> None:
    """Decide each shard whose flow run has ended: done, started again (when), or given up."""
    ended = [s for s in shards if s.flow_run_id in runs and _final(runs[s.flow_run_id])]
    if not ended:
        return
    rows = run_rows(store, plan.run_key)
    logger = get_run_logger()
    for shard in ended:
        assert shard.flow_run_id is not None
        state = runs[shard.flow_run_id].state
        assert state is not None
        shard.history.append(state.name or state.type.value)
        left = unfinished(rows, shard.recipients)
        ok = state.type is StateType.COMPLETED and not left
        if ok or state.type is StateType.CANCELLED:
            shard.over = True
            logger.info("shard %d: %s", shard.number, state.message or state.name)
            continue
        why = f"{state.name}: {state.message or 'no message'}; {len(left)} recipient(s) unfinished"
        if shard.attempts > retries:
            shard.over = True
            logger.error(
                "shard %d gave up after %d attempt(s) (%s): %s",
                shard.number,
                shard.attempts,
                ", ".join(shard.history),
                why,
            )
            continue
        delay = RETRY_DELAYS[min(shard.attempts - 1, len(RETRY_DELAYS) - 1)]
        lapse = claims_lapse_at(rows, left)
        if lapse is not None:
            delay = max(delay, (lapse - datetime.now(UTC)).total_seconds() + 1.0)
        shard.retry_at = clock() + delay
        logger.warning("shard %d %s: starting it again in %.0f s", shard.number, why, delay)


def crashed_before(flow_run_id: uuid.UUID) -> bool:
    """Whether this shard's flow run was ever Crashed: Prefect's automation declared it dead (Pending too long, or
    its heartbeats stopped), so its parent has started another attempt for its recipients and this late process
    must not deliver beside it. Prefect lets a Crashed run turn Running again, so only the run can tell."""
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(flow_run_id)
    return any(state.type is StateType.CRASHED for state in states)


def _final(run: FlowRun) -> bool:
    return run.state is not None and run.state.is_final()


def _cancel_running(shards: list[Shard]) -> None:
    with get_client(sync_client=True) as client:
        for shard in shards:
            if not shard.over and shard.flow_run_id is not None:
                client.set_flow_run_state(shard.flow_run_id, Cancelling(), force=True)
                shard.over = True


def _notice_waiting(shards: list[Shard]) -> None:
    going = [s.number for s in shards if not s.over]
    if going:
        get_run_logger().info(
            "waiting for shard(s) %s: each needs a worker polling this deployment's work pool",
            ", ".join(map(str, going)),
        )
