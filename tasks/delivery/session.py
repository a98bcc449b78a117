"""What a flow run that delivers opens first, whether it delivers a whole run or one shard of it.

The work folder (kept for a dry run, whose files are its output), the signing keyset, the run's services, and each
recipient's organisation's channel preferences for this kind of run, read once and carried by the plan into every
task and worker process. ``flows/deliver_report.py`` and ``flows/deliver_shard.py`` both start here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from bulletin.settings import Settings
from bulletin.store import migrate
from bulletin.store.channel_preferences import EventType
from bulletin.store.recipient_preferences import load_run_preferences
from tasks.delivery.plan import DeliveryPlan
from tasks.delivery.services import DeliveryServices, ServicesSpec, open_services
from tasks.tokens import load_keyset


@dataclass(frozen=True)
class RunSession:
    """A delivering flow run's plan (with the preferences filled in), services, worker-process spec and folder."""

    plan: DeliveryPlan
    services: DeliveryServices
    spec: ServicesSpec
    workdir: Path


@contextmanager
def open_session(
    settings: Settings, plan: DeliveryPlan, *, scheduled: bool, migrate_store: bool = True
) -> Iterator[RunSession]:
    """Open the run's services (closed on exit). ``scheduled``: a run the Prefect scheduler made, whose
    preferences are the organisations' for scheduled reports; else those for jobs. ``migrate_store``: a shard's
    parent migrated the ledger already, and many shards starting at once should not race at it."""
    with ExitStack() as stack:
        if plan.dry_run:
            workdir = Path(tempfile.mkdtemp(prefix=f"bulletin-dry-run-{plan.report.id}-"))
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bulletin-")))
        keyset = load_keyset(settings, create=True)
        services = open_services(settings, stack, workdir=workdir, dry_run=plan.dry_run, keyset=keyset)
        if services.store is not None:
            if migrate_store:
                migrate(services.store)
            kind = EventType.REPORT_SCHEDULE if scheduled else EventType.REPORT_JOB
            plan = replace(plan, channel_preferences=load_run_preferences(services.store, kind, plan.report.id))
        spec = ServicesSpec(settings=settings, workdir=workdir, dry_run=plan.dry_run)
        yield RunSession(plan, services, spec, workdir)
