"""The deliver-report flow: one report, every recipient, each with its own data scope."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
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
from bulletin.errors import BulletinError, DefinitionError
from bulletin.missed import Verdict, decide_report_run
from bulletin.models import Delivery, Manifest, Recipient, RunStatus, run_status
from bulletin.reports import ReportDefinition, get_report, resolve_parameters
from bulletin.settings import Settings
from bulletin.store import check_run_key, migrate, open_store, scheduled_run_key
from bulletin.store.channel_preferences import EventType, load_run_preferences
from tasks.audience import resolve_audience, select_recipients
from tasks.capacity import report_run_slot
from tasks.deliver import DeliveryPlan, deliver_batch, failed_delivery
from tasks.manifest import batch_size, publish_run_artifacts, save_manifest
from tasks.services import DeliveryServices, ServicesSpec, delivery_processes, open_services
from tasks.spread import Lane, spread
from tasks.storage import check_prefix
from tasks.tokens import load_keyset
from tasks.webhooks import publish_run_events, s3_links


def _run_id() -> str:
    current = flow_run.get_id()
    return (current or uuid.uuid4().hex).replace("-", "")[:12]


#: Prefect task threads per report run. Prefect's default pool is unbounded: with one thread per batch, a large
#: audience ran dozens of deliveries at once, which only fought over the GIL and the ledger's single SQLite writer
#: and made memory grow with the audience (docs/benchmarks.md, "Delivery to S3"). A run of 500+ recipients also
#: spreads its batches over worker processes (tasks/services.py, tasks/spread.py): one process's GIL is the limit.
DELIVERY_THREADS = 4
#: Task threads of the flow's own process while worker processes deliver too: fewer, so this process's GIL and the
#: ledger's write lock are not held against the workers (2 measured best on 2 cores: docs/benchmarks.md).
THREADS_BESIDE_PROCESSES = 2


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
    logger = get_run_logger()
    started = datetime.now(UTC)
    run_id = _run_id()
    dry_run, recipients, output_prefix = request.dry_run, request.recipients, request.output_prefix
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
        logger.info("Delivering %s to %d recipient(s) as %s", report.id, len(audience), ", ".join(chosen_formats))
        size = batch_size(len(audience), settings.recipients_per_task)
        batches = [audience[i : i + size] for i in range(0, len(audience), size)]
        processes = delivery_processes(settings.delivery_processes, len(audience))
        spread_out = processes > 0 and len(batches) > DELIVERY_THREADS
        threads = THREADS_BESIDE_PROCESSES if spread_out else DELIVERY_THREADS
        lanes = [Lane("threads", partial(_submit_here, plan, services, size), threads)]
        if spread_out:
            logger.info("%d batches on this process's threads and %d worker process(es)", len(batches), processes)
            spec = ServicesSpec(run_id=run_id, settings=settings, workdir=workdir, dry_run=dry_run)
            runner = stack.enter_context(ProcessPoolTaskRunner(max_workers=processes))
            lanes.append(Lane("processes", partial(_submit_there, runner, plan, spec, size), processes))
        results, per_lane = spread(batches, lanes, partial(_collect, report.id))
        if len(lanes) > 1:
            logger.info("Batches per lane: %s", ", ".join(f"{name} {n}" for name, n in per_lane.items()))
        deliveries = [d for batch_deliveries in results for d in batch_deliveries]

    manifest = Manifest(
        report_id=report.id,
        run_id=run_id,
        run_key=None if dry_run else key,
        started_at=started,
        finished_at=datetime.now(UTC),
        status=run_status(deliveries),
        dry_run=dry_run,
        note=f"dry run: nothing stored; files rendered into {workdir}" if dry_run else None,
        deliveries=deliveries,
    )
    if not dry_run:
        save_manifest(settings.manifests_dir, manifest)
        _publish_events(settings, manifest)
    publish_run_artifacts(manifest)
    summary = (
        f"{manifest.status.value}: {manifest.delivered} delivered, {manifest.skipped} skipped, {manifest.failed} failed"
    )
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
    report, loaded once for them."""
    report = get_report(settings.reports_dir, report_id)
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


def _batch_parameters(
    plan: DeliveryPlan, services: DeliveryServices | ServicesSpec, size: int, batch: list[Recipient]
) -> dict[str, Any]:
    """One deliver-batch task's arguments. quote(): Prefect would otherwise walk the whole report and audience."""
    label = batch[0].ref if size == 1 else f"{batch[0].ref}+{len(batch) - 1}"
    return {"plan": quote(plan), "services": quote(services), "recipients": quote(batch), "label": label}


def _submit_here(
    plan: DeliveryPlan, services: DeliveryServices, size: int, batch: list[Recipient]
) -> PrefectFuture[list[Delivery]]:
    """A batch on the flow's own task threads, with the run's services."""
    future: PrefectFuture[list[Delivery]] = deliver_batch.submit(**_batch_parameters(plan, services, size, batch))
    return future


def _submit_there(
    runner: ProcessPoolTaskRunner, plan: DeliveryPlan, spec: ServicesSpec, size: int, batch: list[Recipient]
) -> PrefectFuture[list[Delivery]]:
    """A batch in a worker process, which builds its own services from ``spec`` (they cannot be pickled)."""
    return runner.submit(deliver_batch, _batch_parameters(plan, spec, size, batch))


def _formats(allowed: Sequence[str], requested: list[str] | None) -> list[str]:
    if not requested:
        return list(allowed)
    unknown = [f for f in requested if f not in allowed]
    if unknown:
        raise DefinitionError(f"format {unknown[0]!r} is not one of this report's formats {allowed}", field="formats")
    return list(dict.fromkeys(requested))


def _collect(report_id: str, future: PrefectFuture[list[Delivery]], batch: list[Recipient]) -> list[Delivery]:
    """A batch's deliveries; if its task failed outright, each of its recipients is recorded as failed."""
    future.wait()
    try:
        deliveries = future.result()
    except Exception as exc:  # noqa: BLE001 - the edge: one batch's failure must not lose the others' deliveries
        deliveries = [failed_delivery(r, exc) for r in batch]
    for delivery in deliveries:  # here, as each batch finishes: a worker process cannot reach these listeners
        progress.notify(report_id, delivery.status.value, delivery.recipient)
    return deliveries
