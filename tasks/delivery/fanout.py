"""Fan a run's audience out over Prefect tasks: one task per recipient for a small run, lanes for a large one.

A small run submits one ``deliver_batch`` task per recipient on the flow's task threads, so the Prefect UI shows each
recipient. A large run has lanes on the flow's task threads and, from ``PROCESSES_FROM_RECIPIENTS`` recipients on, in
worker processes too (``tasks/delivery/worker.py``), fed one recipient at a time by the dispatcher of
``tasks/delivery/spread.py``. Either way a recipient whose task failed outright is recorded as failed, never lost, and
each result reaches the terminal's progress bar as it arrives.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from functools import partial
from typing import Any

from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.settings import get_current_settings
from prefect.utilities.annotations import quote

from bulletin import progress
from bulletin.models import Delivery, Recipient
from bulletin.period import report_period
from bulletin.reports import ReportDefinition, resolve_parameters
from bulletin.requests import DeliveryRequest, requested_formats
from bulletin.settings import Settings
from tasks.delivery.manifest import TASK_PER_RECIPIENT_UP_TO
from tasks.delivery.outcomes import failed_delivery
from tasks.delivery.plan import DeliveryPlan
from tasks.delivery.prefect_tasks import deliver_batch, deliver_lane
from tasks.delivery.services import DeliveryServices, ServicesSpec, delivery_processes
from tasks.delivery.spread import Dispatcher, dispatch
from tasks.delivery.worker import WorkerProcess
from tasks.storage import check_prefix

#: Prefect task threads per report run. Prefect's default pool is unbounded: with one thread per task, a large
#: audience ran dozens of deliveries at once, which only fought over the GIL and the ledger's single SQLite writer
#: and made memory grow with the audience (docs/benchmarks.md, "Delivery to S3"). A run of 500+ recipients also
#: has lanes in worker processes (tasks/delivery/services.py, tasks/delivery/spread.py): one process's GIL is the limit.
DELIVERY_THREADS = 4
#: Lanes on the flow's own task threads while worker processes deliver too: one, as this process also dispatches,
#: forwards the workers' results and runs Prefect's clients (docs/benchmarks.md, "Delivery to S3").
THREADS_BESIDE_PROCESSES = 1
#: Lanes (threads) in each worker process: with one, the process's core idles while the lane waits for S3 or the
#: ledger's commit.
LANES_PER_PROCESS = 2


def plan_delivery(
    settings: Settings,
    report: ReportDefinition,
    request: DeliveryRequest,
    *,
    run_id: str,
    run_key: str,
    started: datetime,
) -> DeliveryPlan:
    """The plan every task of the run is given, in this process or a worker's: what to deliver, and the settings
    the tasks need (a worker process reads none itself)."""
    params = resolve_parameters(report, request.parameters or {}, started.astimezone().date())
    return DeliveryPlan(
        report=report,
        formats=requested_formats(report.formats, request.formats),
        params=params,
        period=report_period(report, params),
        channels=list(report.channels),
        run_id=run_id,
        run_key=run_key,
        started_at=started,
        dry_run=request.dry_run,
        storage_prefix=settings.storage_prefix,
        token_issuer=settings.token_issuer,
        token_audience=settings.token_audience,
        token_ttl_minutes=settings.token_ttl_minutes,
        batch_rows=settings.query_batch_rows,
        csv_bom=settings.csv_bom,
        lease_seconds=settings.claim_lease_seconds,
        output_prefix=check_prefix(request.output_prefix) if request.output_prefix else None,
    )


def deliver_audience(
    settings: Settings,
    plan: DeliveryPlan,
    services: DeliveryServices,
    spec: ServicesSpec,
    audience: list[Recipient],
) -> list[Delivery]:
    """Every recipient's deliveries, in the audience's order: a task each for a small run, lanes for a large one.

    ``spec`` lets worker processes open the run's services themselves.
    """
    if len(audience) <= TASK_PER_RECIPIENT_UP_TO:
        return deliver_each(plan, services, audience)
    return deliver_in_lanes(settings, plan, services, spec, audience)


def deliver_each(plan: DeliveryPlan, services: DeliveryServices, audience: list[Recipient]) -> list[Delivery]:
    """A small run: one Prefect task per recipient on the flow's task threads, so the UI shows each one."""
    futures = [
        deliver_batch.submit(**_quoted(plan=plan, services=services, recipients=[r], label=r.ref)) for r in audience
    ]
    return [d for future, r in zip(futures, audience, strict=True) for d in _collect(plan, future, [r])]


def _quoted(**parameters: Any) -> dict[str, Any]:
    """A task's arguments wrapped in quote(): Prefect would otherwise walk the whole report and audience."""
    return {name: value if isinstance(value, str | int) else quote(value) for name, value in parameters.items()}


def deliver_in_lanes(
    settings: Settings,
    plan: DeliveryPlan,
    services: DeliveryServices,
    spec: ServicesSpec,
    audience: list[Recipient],
) -> list[Delivery]:
    """A large run: lanes on the flow's task threads and in worker processes, fed one recipient at a time by a
    dispatcher (tasks/delivery/spread.py), which retries transient failures and hands a stopped lane's work to the
    others.

    The worker processes (tasks/delivery/worker.py) are waited for on a thread the run does not wait for
    (``after_the_run``): once its lanes have reported, a worker has nothing the run needs.
    """
    logger = get_run_logger()
    processes = delivery_processes(settings.delivery_processes, len(audience))
    threads = THREADS_BESIDE_PROCESSES if processes else DELIVERY_THREADS
    if processes:
        logger.info("%d lanes on this process's threads and %d worker process(es)", threads, processes)
    with ExitStack() as workers:
        futures, started, lanes, reports = _start_lanes(workers, plan, services, spec, audience, threads, processes)
        dispatcher: Dispatcher[Delivery] = Dispatcher(len(audience), len(lanes))
        dispatch(dispatcher, lanes, reports, clock=time.monotonic, on_result=lambda _, d: _ended(plan, d))
        errors = [e for e in map(_lane_error, futures) if e is not None]
        for number, worker in enumerate(started, start=1):
            if (problem := worker.error()) is not None:  # its recipients went to the other lanes
                logger.warning(
                    "worker process %d stopped early (%s): the other lanes took its recipients", number, problem
                )
                errors.append(RuntimeError(problem))
        after_the_run(workers.pop_all().close, "the worker processes did not stop cleanly")
    counts = [f"thread {i + 1} {n}" for i, n in enumerate(dispatcher.per_lane[:threads])]
    counts += [
        f"process {i // LANES_PER_PROCESS + 1}.{i % LANES_PER_PROCESS + 1} {n}"
        for i, n in enumerate(dispatcher.per_lane[threads:])
    ]
    logger.info("Deliveries per lane: %s", ", ".join(counts))
    stopped = errors[0] if errors else RuntimeError("the delivery lanes stopped")
    if dispatcher.unfinished():
        logger.error("%d recipient(s) not delivered: every lane stopped (%s)", len(dispatcher.unfinished()), stopped)
    return [d if d is not None else failed_delivery(audience[i], stopped) for i, d in enumerate(dispatcher.results)]


def _start_lanes(
    workers: ExitStack,
    plan: DeliveryPlan,
    services: DeliveryServices,
    spec: ServicesSpec,
    audience: list[Recipient],
    threads: int,
    processes: int,
) -> tuple[list[PrefectFuture[int]], list[WorkerProcess], list[Any], queue.SimpleQueue[Any]]:
    """Start every lane: the worker processes first (they take a second to start), then the flow's lane tasks. The
    lane tasks' futures, the worker processes, each lane's queue, and the dispatcher's queue they all report on."""
    reports: queue.SimpleQueue[Any] = queue.SimpleQueue()
    started: list[WorkerProcess] = []
    if processes:
        logger, env = get_run_logger(), get_current_settings().to_environment_variables(exclude_unset=True)
        for p in range(processes):
            lanes = [threads + p * LANES_PER_PROCESS + i for i in range(LANES_PER_PROCESS)]
            worker = WorkerProcess(plan, spec, audience, lanes, reports, partial(_worker_log, logger), env)
            workers.callback(worker.close)
            started.append(worker)
    thread_queues: list[Any] = [queue.SimpleQueue() for _ in range(threads)]
    futures: list[PrefectFuture[int]] = [
        deliver_lane.submit(
            **_quoted(
                plan=plan,
                services=services,
                audience=audience,
                lanes=[lane],
                queues=[(q, reports)],
                label=f"thread {lane + 1}",
            )
        )
        for lane, q in enumerate(thread_queues)
    ]
    for lane, future in enumerate(futures):
        future.add_done_callback(partial(_lanes_ended, reports, [lane]))
    return futures, started, [*thread_queues, *(sink for w in started for sink in w.sinks)], reports


def _worker_log(logger: Any, level: int, text: str) -> None:
    logger.log(level, "%s", text)


def after_the_run(work: Callable[[], object], failure: str) -> threading.Thread:
    """Run ``work`` on a thread (in this run's Prefect context) that nothing in the run waits for.

    Not a daemon: the process waits for it before it exits, so a worker process is always stopped and its logs
    reach the Prefect API. Like ``meanwhile``, a failure is logged as ``failure``, never raised.
    """
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(_logged, work, failure), name="bulletin-after-the-run"
    )
    thread.start()
    return thread


#: How long ``once_final`` waits for the flow run's final state before it does its work anyway.
FINAL_STATE_WAIT_SECONDS = 10.0


def once_final(work: Callable[[], object], failure: str, *, poll: float = 0.01) -> threading.Thread:
    """Run ``work`` on a thread like ``after_the_run``, once the current flow run has its final state.

    For what only tells others about a finished run (its Prefect events): the run's end in the Prefect UI, and
    ``run_deployment``'s wait, no longer include it. The thread watches the run's state as the flow engine records it
    (the state the heartbeat thread watches too); outside a flow run, or after FINAL_STATE_WAIT_SECONDS, it does the
    work anyway, so nothing is lost if the state is never seen.
    """
    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None

    def when_final() -> None:
        deadline = time.monotonic() + FINAL_STATE_WAIT_SECONDS
        while run is not None and not (run.state and run.state.is_final()) and time.monotonic() < deadline:
            time.sleep(poll)
        work()

    return after_the_run(when_final, failure)


def _logged(work: Callable[[], object], failure: str) -> None:
    try:
        work()
    except Exception as exc:  # noqa: BLE001 - the deliveries are done: this is worth a warning, not a failure
        get_run_logger().warning("%s: %s", failure, exc)


@contextmanager
def meanwhile(work: Callable[[], object], failure: str) -> Iterator[None]:
    """Run ``work`` on a thread (in this run's Prefect context) while the block runs; wait for it on exit.

    It only records or tidies up after the deliveries: a failure is logged as ``failure``, never raised.
    """

    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(_logged, work, failure), name="bulletin-meanwhile"
    )
    thread.start()
    try:
        yield
    finally:
        thread.join()


def _lanes_ended(reports: queue.SimpleQueue[Any], lanes: list[int], _future: PrefectFuture[int]) -> None:
    """A lane task ended (done callback): tell the dispatcher, which may still be waiting for its lanes."""
    for lane in lanes:
        reports.put(("ended", lane))


def _lane_error(future: PrefectFuture[int]) -> BaseException | None:
    future.wait()
    try:
        future.result()
    except Exception as exc:  # noqa: BLE001 - the edge: why a lane stopped, for the recipients it left
        return exc
    return None


def _collect(plan: DeliveryPlan, future: PrefectFuture[list[Delivery]], batch: list[Recipient]) -> list[Delivery]:
    """A batch's deliveries; if its task failed outright, each of its recipients is recorded as failed."""
    future.wait()
    try:
        deliveries = future.result()
    except Exception as exc:  # noqa: BLE001 - the edge: one batch's failure must not lose the others' deliveries
        deliveries = [failed_delivery(r, exc) for r in batch]
    for delivery in deliveries:
        _ended(plan, delivery)
    return deliveries


def _ended(plan: DeliveryPlan, delivery: Delivery) -> None:
    """A recipient's delivery has ended: tell the terminal's progress bar, here in the flow's process as results
    arrive (a worker process cannot reach its listeners).

    The recipients' Prefect events go out with the run's, once it is over: streamed during the run, the Prefect
    API ingested them one by one and the run was about 7 % slower (docs/benchmarks.md, "Delivery to S3").
    """
    progress.notify(plan.report.id, delivery.status.value, delivery.recipient)
