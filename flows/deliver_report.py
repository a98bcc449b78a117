"""The deliver-report flow: one report, every recipient, each with its own data scope."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.futures import PrefectFuture
from prefect.runtime import deployment, flow_run
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from bulletin import progress
from bulletin.datasets import load_datasets
from bulletin.errors import BulletinError, DefinitionError
from bulletin.models import Delivery, Manifest, RunStatus, run_status
from bulletin.reports import get_report, resolve_parameters
from bulletin.settings import Settings
from bulletin.store import check_run_key, migrate, open_store, scheduled_run_key
from tasks.audience import resolve_audience, select_recipients
from tasks.channels import BucketChannel, EmailChannel, make_destination
from tasks.deliver import DeliveryPlan, DeliveryServices, deliver_batch, failed_delivery
from tasks.manifest import batch_size, publish_run_artifacts, save_manifest
from tasks.query import Warehouse
from tasks.tokens import load_keyset
from tasks.webhooks import publish_run_events, s3_links


def _run_id() -> str:
    current = flow_run.get_id()
    return (current or uuid.uuid4().hex).replace("-", "")[:12]


#: Prefect task threads per report run. Prefect's default pool is unbounded: with one thread per batch, a large
#: audience ran dozens of deliveries at once, which only fought over the GIL and the ledger's single SQLite writer
#: and made memory grow with the audience (docs/benchmarks.md, "Delivery to S3"). Four keeps both cores busy.
DELIVERY_THREADS = 4


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
) -> State:
    """Deliver ``report_id`` to its audience (or only ``recipients``), in its formats (or only ``formats``).

    Returns the run's Manifest. The flow run ends Completed when every delivery succeeded, Completed named
    "Partial" when some failed, and Failed when none succeeded, so a failed delivery is never silent in the UI.
    A request that cannot start (unknown report, bad parameter, no warehouse) ends Failed with one clear message.

    ``run_key`` names the run in the delivery ledger: a re-run with the same key sends only what has not been sent.
    Default: the report and scheduled slot for a deployment run, else a key of this flow run (stable across retries).
    """
    try:
        return _deliver(report_id, recipients, formats, parameters, dry_run, run_key)
    except BulletinError as exc:
        get_run_logger().error("%s", exc)
        return Failed(message=str(exc), data=exc)


def _deliver(
    report_id: str,
    recipients: list[str] | None,
    formats: list[str] | None,
    parameters: dict[str, Any] | None,
    dry_run: bool,
    requested_key: str | None,
) -> State:
    settings = Settings()
    logger = get_run_logger()
    started = datetime.now(UTC)
    run_id = _run_id()
    report = get_report(settings.reports_dir, report_id)
    key = _run_key(report.id, requested_key, run_id)
    chosen_formats = _formats(report.formats, formats)
    params = resolve_parameters(report, parameters or {}, started.astimezone().date())
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
    )
    with ExitStack() as stack:
        warehouse = stack.enter_context(Warehouse(settings.warehouse))
        if dry_run:
            workdir = Path(tempfile.mkdtemp(prefix=f"bulletin-dry-run-{report.id}-"))
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bulletin-")))
        store = None
        if not dry_run:
            store = stack.enter_context(open_store(settings.database))
            migrate(store)
        services = DeliveryServices(
            keyset=load_keyset(settings, create=True),
            datasets=load_datasets(settings.datasets_dir),
            warehouse=warehouse,
            bucket=BucketChannel(make_destination(settings), link_seconds=settings.link_expiry_seconds),
            store=store,
            clock=lambda: datetime.now(UTC),
            workdir=workdir,
            email_factory=lambda: EmailChannel.from_settings(settings),
        )
        audience = select_recipients(resolve_audience(report, warehouse), recipients)
        progress.notify(report.id, "planned", str(len(audience)))
        logger.info("Delivering %s to %d recipient(s) as %s", report.id, len(audience), ", ".join(chosen_formats))
        size = batch_size(len(audience), settings.recipients_per_task)
        batches = [audience[i : i + size] for i in range(0, len(audience), size)]
        futures = [
            # quote(): Prefect would otherwise walk these arguments (the whole report and audience) for every task.
            deliver_batch.submit(  # type: ignore[call-overload]  # quote() is unwrapped by Prefect before the call
                quote(plan),
                quote(services),
                quote(batch),
                label=batch[0].ref if size == 1 else f"{batch[0].ref}+{len(batch) - 1}",
            )
            for batch in batches
        ]
        deliveries = [d for future, batch in zip(futures, batches, strict=True) for d in _collect(future, batch)]

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
) -> None:
    """The checks the flow makes before any work, for callers that want to refuse a bad request up front."""
    report = get_report(settings.reports_dir, report_id)
    _formats(report.formats, formats)
    resolve_parameters(report, parameters or {}, datetime.now(UTC).date())
    if run_key:
        check_run_key(run_key)


def _run_key(report_id: str, requested: str | None, run_id: str) -> str:
    if requested:
        return check_run_key(requested)
    slot = flow_run.get_scheduled_start_time() if deployment.get_id() else None
    if slot is not None:
        return scheduled_run_key(report_id, slot)
    return check_run_key(f"adhoc-{run_id}")


def _formats(allowed: Sequence[str], requested: list[str] | None) -> list[str]:
    if not requested:
        return list(allowed)
    unknown = [f for f in requested if f not in allowed]
    if unknown:
        raise DefinitionError(f"format {unknown[0]!r} is not one of this report's formats {allowed}", field="formats")
    return list(dict.fromkeys(requested))


def _collect(future: PrefectFuture[list[Delivery]], batch: list[Any]) -> list[Delivery]:
    """A batch's deliveries; if its task failed outright, each of its recipients is recorded as failed."""
    future.wait()
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - the edge: one batch's failure must not lose the others' deliveries
        return [failed_delivery(r, exc) for r in batch]
