"""The deliver-report flow: one report, every recipient, each with its own data scope."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from bulletin import progress
from bulletin.errors import BulletinError
from bulletin.missed import Verdict, decide_report_run
from bulletin.models import Manifest, RunStatus, run_status
from bulletin.reports import ReportDefinition
from bulletin.requests import DeliveryRequest, check_request, request_run_key
from bulletin.settings import Settings
from bulletin.store import open_store
from tasks.audience import resolve_audience, select_recipients
from tasks.delivery import DeliveryPlan
from tasks.delivery.capacity import cancel_requested, report_run_slot
from tasks.delivery.fanout import DELIVERY_THREADS, deliver_audience, meanwhile, once_final, plan_delivery
from tasks.delivery.manifest import publish_run_artifacts, save_manifest
from tasks.delivery.registry import channel_problem
from tasks.delivery.session import open_session
from tasks.delivery.sharding import deliver_in_shards, shard_deployment_ready
from tasks.dependents import after_upstream_key
from tasks.webhooks.publish import emit_run_events, file_links, publish_run_events


def _run_id() -> str:
    """This run's name everywhere (manifest, run key, file names, events): the whole flow-run id. Prefect's ids are
    UUIDv7, whose first 12 hex digits are the creation millisecond: runs the scheduler creates together share them."""
    current = flow_run.get_id()
    return str(uuid.UUID(current)) if current else str(uuid.uuid4())


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
    upstream_report: str | None = None,
    upstream_run_id: str | None = None,
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

    ``upstream_report`` and ``upstream_run_id`` (given together) say this run refreshes the report after that
    upstream run, as the deployment trigger ``depends_on`` generates does: the run key is then the one the
    refresh-dependents flow uses for the same upstream run, so the two paths firing for one upstream run deliver
    once.
    """
    try:
        if upstream_report is not None or upstream_run_id is not None:
            run_key = after_upstream_key(report_id, upstream_report, upstream_run_id, run_key)
        request = DeliveryRequest(report_id, recipients, formats, parameters, dry_run, run_key, output_prefix)
        return _deliver_in_turn(Settings(), request)
    except BulletinError as exc:
        get_run_logger().error("%s", exc)
        return Failed(message=str(exc), data=exc)


def _deliver_in_turn(settings: Settings, request: DeliveryRequest) -> State:
    """The request's checks and the missed-run policy, then the delivery inside a report-run slot.

    Both come before the slot, so a bad request or a stale run never waits in the queue; the policy is asked again
    once the slot is held, because a run that waited past its tolerance is just as stale. The report is loaded once,
    by the checks.
    """
    report = check_request(
        settings,
        request.report_id,
        formats=request.formats,
        parameters=request.parameters,
        run_key=request.run_key,
        channels=channel_problem,
    )
    slot = _scheduled_slot()
    late = _late_run(settings, report, slot, request)
    if late is not None:
        return late
    current = flow_run.get_id()
    with report_run_slot(
        settings.max_concurrent_runs, logger=get_run_logger(), flow_run_id=uuid.UUID(current) if current else None
    ) as held:
        late = _late_run(settings, report, slot, request)
        if late is not None:
            return late
        if current and cancel_requested(uuid.UUID(current)):
            get_run_logger().warning("cancelled while it waited for a report-run slot: nothing delivered")
            return Cancelled(message="cancelled while queued: nothing delivered")
        return _deliver(settings, report, request, delivered=held.release_soon)


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


def _late_run(
    settings: Settings, report: ReportDefinition, slot: datetime | None, request: DeliveryRequest
) -> State | None:
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
    key = None if request.dry_run else request_run_key(report.id, request.run_key, run_id, request.parameters, slot)
    manifest = Manifest(
        report_id=report.id,
        run_id=run_id,
        run_key=key,
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


def _deliver(
    settings: Settings, report: ReportDefinition, request: DeliveryRequest, *, delivered: Callable[[], None]
) -> State:
    started, run_id = datetime.now(UTC), _run_id()
    key = request_run_key(report.id, request.run_key, run_id, request.parameters, _scheduled_slot())
    plan = plan_delivery(settings, report, request, run_id=run_id, run_key=key, started=started)
    return _deliver_planned(settings, report, request, plan, delivered=delivered)


def _deliver_planned(
    settings: Settings,
    report: ReportDefinition,
    request: DeliveryRequest,
    plan: DeliveryPlan,
    *,
    delivered: Callable[[], None],
) -> State:
    """Deliver, then record: ``delivered`` is called once every delivery is done (and the run's services closed),
    before the manifest, the artifacts and the events, so the report-run slot is given back while they are written
    (tasks/delivery/capacity.py)."""
    logger = get_run_logger()
    dry_run, recipients, run_id, started = request.dry_run, request.recipients, plan.run_id, plan.started_at
    scheduled = _scheduled_slot() is not None
    with open_session(settings, plan, scheduled=scheduled) as session:
        plan, services, workdir = session.plan, session.services, session.workdir
        audience = select_recipients(resolve_audience(report, services.warehouse), recipients)
        progress.notify(report.id, "planned", str(len(audience)))
        logger.info("Delivering %s to %d recipient(s) as %s", report.id, len(audience), ", ".join(plan.formats))
        if services.store is not None and _sharded(settings, len(audience)):
            current = flow_run.get_id()
            deliveries = deliver_in_shards(
                plan,
                services.store,
                audience,
                shard_size=settings.shard_recipients,
                retries=settings.shard_retries,
                scheduled=scheduled,
                parent_id=uuid.UUID(current) if current else None,
            )
        else:
            deliveries = deliver_audience(settings, plan, services, session.spec, audience)
    delivered()
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
    # The artifacts wait mostly on the Prefect API, the webhooks on their store and receivers: side by side.
    with meanwhile(partial(publish_run_artifacts, manifest), "the run's artifacts were not published"):
        if not dry_run:
            _publish_webhooks(settings, manifest)
            # A 1,000-recipient run's Prefect events took 0.4 s before its end: they go once it has ended.
            once_final(partial(emit_run_events, manifest), "the run's Prefect events were not emitted")
    summary = f"{manifest.status.value}: {manifest.tally}"
    logger.info("%s", summary)
    if manifest.status is RunStatus.FAILED:
        return Failed(message=summary, data=manifest)
    if manifest.status is RunStatus.PARTIAL:
        return Completed(name="Partial", message=summary, data=manifest)
    return Completed(message=summary, data=manifest)


def _sharded(settings: Settings, recipients: int) -> bool:
    """Whether this run delivers through shards: more recipients than BULLETIN_SHARD_RECIPIENTS, and the pool has
    the deliver-shard deployment (without it, as in ``make demo``'s in-process runs, the run delivers itself)."""
    if not settings.shard_recipients or recipients <= settings.shard_recipients:
        return False
    problem = shard_deployment_ready()
    if problem is None:
        return True
    get_run_logger().info(
        "%d recipients is over BULLETIN_SHARD_RECIPIENTS (%d), but %s: delivering in this flow run",
        recipients,
        settings.shard_recipients,
        problem,
    )
    return False


def _publish_webhooks(settings: Settings, manifest: Manifest) -> None:
    """Webhook messages for this run: they never change its outcome.

    The first attempt of each webhook is made now (bounded); retries wait for the deliver-webhooks flow. The run's
    Prefect events go once it has its final state (``_deliver_planned``).
    """
    try:
        with open_store(settings.database) as store:
            publish_run_events(settings, store, manifest, links=file_links(settings))
    except BulletinError as exc:
        get_run_logger().warning("webhook events not published: %s", exc)
