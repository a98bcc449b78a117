"""What a run delivers, the same for every recipient: the plan each delivery task is given, in the flow's process
or a worker's (it pickles; a worker process reads no settings itself)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bulletin.models import QuerySpec, Recipient
from bulletin.period import Period
from bulletin.reports import ReportDefinition, recipient_context, template_filters
from bulletin.store.channel_preferences import RunPreferences


@dataclass(frozen=True)
class DeliveryPlan:
    """What this run delivers: the same for every recipient."""

    report: ReportDefinition
    params: dict[str, Any]
    formats: list[str]
    channels: list[str]  # ChannelName values, in the report's order
    run_id: str
    run_key: str
    started_at: datetime
    dry_run: bool
    storage_prefix: str
    token_issuer: str
    token_audience: str
    token_ttl_minutes: int
    batch_rows: int
    csv_bom: bool = False
    #: The ledger claim's lease (BULLETIN_CLAIM_LEASE_SECONDS; this is its default), renewed while a delivery works
    #: (tasks/delivery/leases.py): how long a crashed run's deliveries stay blocked.
    lease_seconds: float = 90.0
    output_prefix: str | None = None  # key segments after the organisation's prefix (a job's output.prefix)
    #: The communication-channel preferences for this run's event type, loaded once by the flow
    #: (``load_run_preferences``). None: every recipient gets ``channels``.
    channel_preferences: RunPreferences | None = None
    #: The days this run's data covers (bulletin/period.py), the same for every recipient; None: not stated.
    period: Period | None = None


def build_query(plan: DeliveryPlan, recipient: Recipient) -> QuerySpec:
    report = plan.report
    context = {"recipient": recipient_context(recipient), "params": plan.params}
    return QuerySpec(
        dataset=report.dataset,
        columns=list(report.columns),
        filters=template_filters(report.filters, context),
        order=list(report.order),
        limit=report.limit,
    )
