"""The deliver-shard flow: one shard of a large report run, on whichever worker of the pool takes it.

A deliver-report run with more recipients than ``BULLETIN_SHARD_RECIPIENTS`` starts one of these per shard
(``tasks/delivery/sharding.py``) and waits for them. A shard delivers under its parent's run id and run key, so the
ledger treats every shard as part of the one run: a shard started again after its worker died sends only what the
dead one had not. It saves no manifest and publishes no events: the parent does, once, for the whole run, from
the ledger.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from bulletin.errors import BulletinError
from bulletin.models import RunStatus, run_status
from bulletin.reports import get_report
from bulletin.requests import DeliveryRequest
from bulletin.settings import Settings
from bulletin.store import check_run_key
from tasks.audience import resolve_audience
from tasks.delivery.fanout import DELIVERY_THREADS, deliver_audience, plan_delivery
from tasks.delivery.session import open_session
from tasks.delivery.sharding import crashed_before


@flow(
    name="deliver-shard",
    log_prints=False,
    persist_result=False,
    task_runner=ThreadPoolTaskRunner(max_workers=DELIVERY_THREADS),  # type: ignore[arg-type]
)
def deliver_shard(
    report_id: str,
    run_id: str,
    run_key: str,
    started_at: str,
    shard: int,
    shards: int,
    recipients: list[str],
    formats: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
    output_prefix: str | None = None,
    scheduled: bool = False,
) -> State:
    """Deliver ``report_id`` to ``recipients``, shard ``shard`` of ``shards`` of run ``run_id``.

    Ends Completed (named "Partial" when some deliveries failed) or Failed when none succeeded; the parent run
    starts a Failed or Crashed shard again. A recipient no longer in the report's audience is left out, and the
    parent's manifest says it was never reached. A flow run that was ever Crashed (its worker seemed dead, and the
    parent has started another attempt) ends Cancelled without delivering anything.
    """
    if flow_run.id and crashed_before(uuid.UUID(flow_run.id)):
        message = f"shard {shard}/{shards}: this attempt was marked Crashed before it started; another attempt has it"
        get_run_logger().warning("%s", message)
        return Cancelled(message=message)
    try:
        return _deliver_shard(
            Settings(),
            DeliveryRequest(
                report_id, recipients, formats, parameters, run_key=check_run_key(run_key), output_prefix=output_prefix
            ),
            run_id=run_id,
            started=datetime.fromisoformat(started_at),
            label=f"shard {shard}/{shards}",
            scheduled=scheduled,
        )
    except (BulletinError, ValueError) as exc:
        get_run_logger().error("%s", exc)
        return Failed(message=str(exc))


def _deliver_shard(
    settings: Settings, request: DeliveryRequest, *, run_id: str, started: datetime, label: str, scheduled: bool
) -> State:
    logger = get_run_logger()
    report = get_report(settings.reports_dir, request.report_id)
    assert request.run_key is not None  # given by the parent
    plan = plan_delivery(settings, report, request, run_id=run_id, run_key=request.run_key, started=started)
    wanted = set(request.recipients or ())
    with open_session(settings, plan, scheduled=scheduled, migrate_store=False) as session:
        audience = [r for r in resolve_audience(report, session.services.warehouse) if r.ref in wanted]
        if len(audience) < len(wanted):
            logger.warning("%s: %d recipient(s) left the audience", label, len(wanted) - len(audience))
        logger.info("%s of %s run %s: %d recipient(s)", label, report.id, run_id, len(audience))
        deliveries = deliver_audience(settings, session.plan, session.services, session.spec, audience)
    status = run_status(deliveries)
    counts: dict[str, int] = {}
    for delivery in deliveries:
        counts[delivery.status.value] = counts.get(delivery.status.value, 0) + 1
    summary = f"{label} {status.value}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    logger.info("%s", summary)
    if status is RunStatus.FAILED:
        return Failed(message=summary)
    if status is RunStatus.PARTIAL:
        return Completed(name="Partial", message=summary)
    return Completed(message=summary)
