"""The deliver-report flow: one report, every recipient, each with its own data scope."""

from __future__ import annotations

import contextvars
import multiprocessing
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from bulletin import progress
from bulletin.datasets import load_datasets
from bulletin.errors import BulletinError, DefinitionError
from bulletin.missed import Verdict, decide_report_run
from bulletin.models import Delivery, Manifest, Recipient, RunStatus, run_status
from bulletin.report_checks import check_report
from bulletin.reports import ReportDefinition, get_report, resolve_parameters
from bulletin.settings import Settings
from bulletin.store import check_run_key, migrate, open_store, scheduled_run_key
from bulletin.store.channel_preferences import EventType, load_run_preferences
from tasks.audience import resolve_audience, select_recipients
from tasks.capacity import report_run_slot
from tasks.deliver import DeliveryPlan, deliver_batch, deliver_lane, failed_delivery
from tasks.manifest import TASK_PER_RECIPIENT_UP_TO, publish_run_artifacts, save_manifest
from tasks.services import DeliveryServices, ServicesSpec, delivery_processes, open_services
from tasks.spread import Dispatcher, attach_queues, dispatch, forwarding
from tasks.storage import check_prefix
from tasks.tokens import load_keyset
from tasks.webhooks import publish_run_events, s3_links


def _run_id() -> str:
    """This run's name everywhere (manifest, run key, file names, events): the whole flow-run id. Prefect's ids are
    UUIDv7, whose first 12 hex digits are the creation millisecond: runs the scheduler creates together share them."""
    current = flow_run.get_id()
    return str(uuid.UUID(current)) if current else str(uuid.uuid4())


#: Prefect task threads per report run. Prefect's default pool is unbounded: with one thread per task, a large
#: audience ran dozens of deliveries at once, which only fought over the GIL and the ledger's single SQLite writer
#: and made memory grow with the audience (docs/benchmarks.md, "Delivery to S3"). A run of 500+ recipients also
#: has lanes in worker processes (tasks/services.py, tasks/spread.py): one process's GIL is the limit.
DELIVERY_THREADS = 4
#: Lanes on the flow's own task threads while worker processes deliver too: one, as this process also dispatches,
#: forwards the workers' results and runs Prefect's clients (docs/benchmarks.md, "Delivery to S3").
THREADS_BESIDE_PROCESSES = 1
#: Lanes (threads) in each worker process: with one, the process's core idles while the lane waits for S3 or the
#: ledger's commit.
LANES_PER_PROCESS = 2


@flow(
    name="deliver-report",
    log_prints=False,
    persist_result=False,
    # Prefect 3.8's stubs type a bare ThreadPoolTaskRunner as ThreadPoolTaskRunner[Never]; it is the documented use.
    task_runner=ThreadPoolTaskRunner(max_workers=DELIVERY_THREADS),  # type: ignore[arg-type]
)
def deliver_report(
    report_id: str,
    recipients: list[str] | None = None,
    formats: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
    dry_run: bool = False,
    run_key: str | None = None,
    output_prefix: str | None = None,
) -> State:
    """Deliver ``report_id`` to its audience (or only ``recipients``), in its formats (or only ``formats``).

    Returns the run's Manifest. The flow run ends Completed when every delivery succeeded, Completed named
    "Partial" when some failed, and Failed when none succeeded, so a failed delivery is never silent in the UI.
    A request that cannot start (unknown report, bad parameter, no warehouse) ends Failed with one clear message.
    A scheduled run that starts too late, or whose slot a newer one supersedes, delivers nothing and ends Cancelled,
    named "Missed" or "Superseded" (bulletin/missed.py). At most BULLETIN_MAX_CONCURRENT_RUNS runs deliver at once.

    ``run_key`` names the run in the delivery ledger: a re-run with the same key sends only what has not been sent.
    Default: the report and slot of a run the Prefect scheduler made, else a key of this flow run (stable across
    retries); a run of a deployment started by hand is ad hoc. ``output_prefix`` puts the files in a folder of their
    own, inside the recipient's organisation's prefix (a job's ``output.prefix``).
    """
    request = _Request(report_id, recipients, formats, parameters, dry_run, run_key, output_prefix)
    try:
        return _deliver_in_turn(Settings(), request)
    except BulletinError as exc:
        get_run_logger().error("%s", exc)
        return Failed(message=str(exc), data=exc)


@dataclass(frozen=True)
class _Request:
    """The flow's arguments, as the steps below pass them on."""

    report_id: str
    recipients: list[str] | None
    formats: list[str] | None
    parameters: dict[str, Any] | None
    dry_run: bool
    run_key: str | None
    output_prefix: str | None


def _deliver_in_turn(settings: Settings, request: _Request) -> State:
    """The request's checks and the missed-run policy, then the delivery inside a report-run slot.

    Both come before the slot, so a bad request or a stale run never waits in the queue; the policy is asked again
    once the slot is held, because a run that waited past its tolerance is just as stale. The report is loaded once,
    by the checks.
    """
    report = check_request(
        settings, request.report_id, formats=request.formats, parameters=request.parameters, run_key=request.run_key
    )
    slot = _scheduled_slot()
    late = _late_run(settings, report, slot, request)
    if late is not None:
        return late
    current = flow_run.get_id()
    with report_run_slot(
        settings.max_concurrent_runs, logger=get_run_logger(), flow_run_id=uuid.UUID(current) if current else None
    ):
        late = _late_run(settings, report, slot, request)
        if late is not None:
            return late
        if current and _cancel_requested(uuid.UUID(current)):
            get_run_logger().warning("cancelled while it waited for a report-run slot: nothing delivered")
            return Cancelled(message="cancelled while queued: nothing delivered")
        return _deliver(settings, report, request)


def _cancel_requested(flow_run_id: uuid.UUID) -> bool:
    """Whether someone asked to cancel this run while it waited for its slot (``DELETE /v1/jobs/{id}``, the UI).

    A worker stops a cancelled run's process itself; a run that the API or a script executes in its own process
    is only marked Cancelling, so a queued run looks once, before it delivers anything.
    """
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
    except httpx.HTTPError:
        return False  # the API is unreachable: the run goes on, as it would have without this look
    return state is not None and (state.is_cancelling() or state.is_cancelled())


def _scheduled_slot() -> datetime | None:
    """The slot of a run that the Prefect scheduler made for a deployment; None for every other run.

    ``auto_scheduled`` tells the scheduler's runs from a deployment run started by hand, by the API or by
    ``run_deployment``, which are ad-hoc and never subject to the missed-run policy.
    """
    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    if run is None or run.deployment_id is None or not run.auto_scheduled:
        return None
    return run.expected_start_time


def _late_run(settings: Settings, report: ReportDefinition, slot: datetime | None, request: _Request) -> State | None:
    """None when the run may deliver; else the recorded outcome of a missed or superseded run, which sent nothing.

    It ends Cancelled (named "Missed" or "Superseded"), not Completed: it is not a success, and it is not a failure
    to retry or page about either. Its manifest (status MISSED, the reason in ``note``) is saved like any other, and
    ``bulletin schedules missed`` lists them. It publishes no webhook events: nothing was delivered.
    """
    if slot is None:
        return None
    now = datetime.now(UTC)
    decision = decide_report_run(report, slot, now)
    if decision.delivers:
        return None
    run_id = _run_id()
    manifest = Manifest(
        report_id=report.id,
        run_id=run_id,
        run_key=None if request.dry_run else _run_key(report.id, request.run_key, run_id, request.parameters),
        started_at=now,
        finished_at=now,
        status=RunStatus.MISSED,
        dry_run=request.dry_run,
        note=decision.reason,
    )
    get_run_logger().warning("%s %s", report.id, decision.reason)
    if not request.dry_run:
        save_manifest(settings.manifests_dir, manifest)
    publish_run_artifacts(manifest)
    name = "Missed" if decision.verdict is Verdict.MISSED else "Superseded"
    return Cancelled(name=name, message=f"{report.id} {decision.reason}", data=manifest)


def _deliver(settings: Settings, report: ReportDefinition, request: _Request) -> State:
    started = datetime.now(UTC)
    run_id = _run_id()
    dry_run, output_prefix = request.dry_run, request.output_prefix
    key = _run_key(report.id, request.run_key, run_id, request.parameters)
    chosen_formats = _formats(report.formats, request.formats)
    params = resolve_parameters(report, request.parameters or {}, started.astimezone().date())
    plan = DeliveryPlan(
        report=report,
        params=params,
        formats=chosen_formats,
        channels=list(report.channels),
        run_id=run_id,
        run_key=key,
        started_at=started,
        dry_run=dry_run,
        storage_prefix=settings.storage_prefix,
        token_issuer=settings.token_issuer,
        token_audience=settings.token_audience,
        token_ttl_minutes=settings.token_ttl_minutes,
        batch_rows=settings.query_batch_rows,
        csv_bom=settings.csv_bom,
        output_prefix=check_prefix(output_prefix) if output_prefix else None,
    )
    with ExitStack() as finishing:  # what may still be ending while the run writes its manifest (_in_lanes)
        return _deliver_planned(settings, report, request, plan, finishing)


def _deliver_planned(
    settings: Settings, report: ReportDefinition, request: _Request, plan: DeliveryPlan, finishing: ExitStack
) -> State:
    logger = get_run_logger()
    dry_run, recipients, run_id, started = request.dry_run, request.recipients, plan.run_id, plan.started_at
    with ExitStack() as stack:
        if dry_run:
            workdir = Path(tempfile.mkdtemp(prefix=f"bulletin-dry-run-{report.id}-"))
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bulletin-")))
        keyset = load_keyset(settings, create=True)
        services = open_services(settings, stack, workdir=workdir, dry_run=dry_run, keyset=keyset)
        if services.store is not None:
            migrate(services.store)
            # Each recipient's organisation may have turned channels off for this kind of run (the API's
            # communication-channel preferences): read once, carried by the plan into every task and process.
            kind = EventType.REPORT_SCHEDULE if _scheduled_slot() is not None else EventType.REPORT_JOB
            plan = replace(plan, channel_preferences=load_run_preferences(services.store, kind))
        audience = select_recipients(resolve_audience(report, services.warehouse), recipients)
        progress.notify(report.id, "planned", str(len(audience)))
        logger.info("Delivering %s to %d recipient(s) as %s", report.id, len(audience), ", ".join(plan.formats))
        if len(audience) <= TASK_PER_RECIPIENT_UP_TO:
            deliveries = _task_each(plan, services, audience)
        else:
            spec = ServicesSpec(run_id=run_id, settings=settings, workdir=workdir, dry_run=dry_run)
            deliveries = _in_lanes(settings, finishing, plan, services, spec, audience)

    manifest = Manifest(
        report_id=report.id,
        run_id=run_id,
        run_key=None if dry_run else plan.run_key,
        started_at=started,
        finished_at=datetime.now(UTC),
        status=run_status(deliveries),
        dry_run=dry_run,
        note=f"dry run: nothing stored; files rendered into {workdir}" if dry_run else None,
        deliveries=deliveries,
    )
    if not dry_run:
        save_manifest(settings.manifests_dir, manifest)
    # The artifacts wait mostly on the Prefect API, the events mostly on this process: side by side.
    with _meanwhile(partial(publish_run_artifacts, manifest), "the run's artifacts were not published"):
        if not dry_run:
            _publish_events(settings, manifest)
    summary = f"{manifest.status.value}: {manifest.tally}"
    logger.info("%s", summary)
    if manifest.status is RunStatus.FAILED:
        return Failed(message=summary, data=manifest)
    if manifest.status is RunStatus.PARTIAL:
        return Completed(name="Partial", message=summary, data=manifest)
    return Completed(message=summary, data=manifest)


def _publish_events(settings: Settings, manifest: Manifest) -> None:
    """Webhook messages and Prefect events for this run, off the critical path: they never change its outcome.

    The first attempt of each webhook is made now (bounded); retries wait for the deliver-webhooks flow.
    """
    try:
        with open_store(settings.database) as store:
            publish_run_events(settings, store, manifest, links=s3_links(settings))
    except BulletinError as exc:
        get_run_logger().warning("webhook events not published: %s", exc)


def check_request(
    settings: Settings,
    report_id: str,
    *,
    formats: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
    run_key: str | None = None,
) -> ReportDefinition:
    """The checks the flow makes before any work, for callers that want to refuse a bad request up front; the
    report, loaded once for them. A report that the dataset registry refuses fails here, once, naming its first
    problem (``bulletin reports validate`` lists them all), not once per recipient at run time."""
    report = get_report(settings.reports_dir, report_id)
    problems = check_report(report, load_datasets(settings.datasets_dir), each_recipient=False)
    if problems:
        more = f" (and {len(problems) - 1} more: see bulletin reports validate)" if len(problems) > 1 else ""
        raise DefinitionError(f"report {report.id!r}: {problems[0]}{more}", field=problems[0].path)
    _formats(report.formats, formats)
    resolve_parameters(report, parameters or {}, datetime.now(UTC).date())
    if run_key:
        check_run_key(run_key)
    return report


def _run_key(report_id: str, requested: str | None, run_id: str, parameters: dict[str, Any] | None) -> str:
    """The ledger key: the one asked for, else the report and slot of a run the scheduler made (so two runs of one
    slot send once), else this flow run's own key (a run started by hand is its own run; stable across retries)."""
    if requested:
        return check_run_key(requested)
    slot = _scheduled_slot()
    if slot is not None:
        return scheduled_run_key(report_id, slot, parameters)
    return check_run_key(f"adhoc-{run_id}")


def _task_each(plan: DeliveryPlan, services: DeliveryServices, audience: list[Recipient]) -> list[Delivery]:
    """A small run: one Prefect task per recipient on the flow's task threads, so the UI shows each one."""
    futures = [
        deliver_batch.submit(**_quoted(plan=plan, services=services, recipients=[r], label=r.ref)) for r in audience
    ]
    return [d for future, r in zip(futures, audience, strict=True) for d in _collect(plan, future, [r])]


def _quoted(**parameters: Any) -> dict[str, Any]:
    """A task's arguments wrapped in quote(): Prefect would otherwise walk the whole report and audience."""
    return {name: value if isinstance(value, str | int) else quote(value) for name, value in parameters.items()}


def _in_lanes(
    settings: Settings,
    finishing: ExitStack,
    plan: DeliveryPlan,
    services: DeliveryServices,
    spec: ServicesSpec,
    audience: list[Recipient],
) -> list[Delivery]:
    """A large run: lanes on the flow's task threads and in worker processes, fed one recipient at a time by a
    dispatcher (tasks/spread.py), which retries transient failures and hands a stopped lane's work to the others.

    The worker processes are stopped on a thread that ``finishing`` joins: a worker takes about a second to exit,
    which the run spends on its manifest, events and artifacts instead of waiting.
    """
    logger = get_run_logger()
    processes = delivery_processes(settings.delivery_processes, len(audience))
    threads = THREADS_BESIDE_PROCESSES if processes else DELIVERY_THREADS
    if processes:
        logger.info("%d lanes on this process's threads and %d worker process(es)", threads, processes)
    with ExitStack() as workers:
        futures, lanes, reports = _start_lanes(workers, plan, services, spec, audience, threads, processes)
        dispatcher: Dispatcher[Delivery] = Dispatcher(len(audience), len(lanes))
        dispatch(dispatcher, lanes, reports, clock=time.monotonic, on_result=lambda _, d: _ended(plan, d))
        errors = [e for e in map(_lane_error, futures) if e is not None]
        finishing.enter_context(_meanwhile(workers.pop_all().close, "the worker processes did not stop cleanly"))
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
) -> tuple[list[PrefectFuture[int]], list[Any], queue.SimpleQueue[Any]]:
    """Submit every lane's task; their futures, each lane's queue, and the dispatcher's queue they report on.

    The flow's own lanes report on it directly. Worker processes get their queues when they start (multiprocessing
    queues cannot be task arguments) and report through a thread that forwards onto it.
    """
    thread_queues: list[Any] = [queue.SimpleQueue() for _ in range(threads)]
    reports: queue.SimpleQueue[Any] = queue.SimpleQueue()
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
    lanes_of = [[lane] for lane in range(threads)]  # per future
    process_queues: dict[int, Any] = {}
    if processes:
        context = multiprocessing.get_context("spawn")  # what ProcessPoolTaskRunner uses
        from_processes = context.Queue()
        process_queues = {threads + i: context.Queue() for i in range(processes * LANES_PER_PROCESS)}
        workers.enter_context(forwarding(from_processes, reports))
        runner = workers.enter_context(
            ProcessPoolTaskRunner(
                max_workers=processes, initializer=attach_queues, initargs=(process_queues, from_processes)
            )
        )
        numbers = list(process_queues)
        for p in range(processes):
            lanes = numbers[p * LANES_PER_PROCESS : (p + 1) * LANES_PER_PROCESS]
            parameters = _quoted(plan=plan, services=spec, audience=audience, lanes=lanes, label=f"process {p + 1}")
            futures.append(runner.submit(deliver_lane, {**parameters, "queues": None}))
            lanes_of.append(lanes)
    for future, lanes in zip(futures, lanes_of, strict=True):
        future.add_done_callback(partial(_lanes_ended, reports, lanes))
    return futures, [*thread_queues, *process_queues.values()], reports


@contextmanager
def _meanwhile(work: Callable[[], object], failure: str) -> Iterator[None]:
    """Run ``work`` on a thread (in this run's Prefect context) while the block runs; wait for it on exit.

    It only records or tidies up after the deliveries: a failure is logged as ``failure``, never raised.
    """

    def run() -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - the deliveries are done: this is worth a warning, not a failure
            get_run_logger().warning("%s: %s", failure, exc)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,), name="bulletin-meanwhile")
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


def _formats(allowed: Sequence[str], requested: list[str] | None) -> list[str]:
    if not requested:
        return list(allowed)
    unknown = [f for f in requested if f not in allowed]
    if unknown:
        raise DefinitionError(f"format {unknown[0]!r} is not one of this report's formats {allowed}", field="formats")
    return list(dict.fromkeys(requested))


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
