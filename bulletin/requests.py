"""A delivery request's checks, made before any work: by the deliver-report flow, and up front by the HTTP API and
the CLI so that they refuse a bad request at once rather than start a run that can only fail.

No Prefect here: the flow looks up what only Prefect knows (its run id, the scheduler's slot) and passes it in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bulletin.datasets import load_datasets
from bulletin.errors import DefinitionError
from bulletin.report_checks import check_report
from bulletin.reports import ReportDefinition, get_report, resolve_parameters
from bulletin.settings import Settings
from bulletin.store import check_run_key, scheduled_run_key

#: Why channel ``name`` cannot deliver under ``settings`` (no module registers it, or the settings do not configure
#: it), or None: the channel registry's answer (``tasks.delivery.registry.channel_problem``), which the flow, the API
#: and the CLI pass in; the core does not know which channels are registered.
ChannelCheck = Callable[[str, Settings], str | None]


@dataclass(frozen=True)
class DeliveryRequest:
    """What a deliver-report run was asked for: the flow's arguments, as its steps pass them on."""

    report_id: str
    recipients: list[str] | None = None
    formats: list[str] | None = None
    parameters: dict[str, Any] | None = None
    dry_run: bool = False
    run_key: str | None = None
    output_prefix: str | None = None


def check_request(
    settings: Settings,
    report_id: str,
    *,
    formats: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
    run_key: str | None = None,
    channels: ChannelCheck | None = None,
) -> ReportDefinition:
    """The checks the flow makes before any work, for callers that want to refuse a bad request up front; the
    report, loaded once for them. A report that the dataset registry refuses fails here, once, naming its first
    problem (``bulletin reports validate`` lists them all), not once per recipient at run time; so does one naming
    a channel that ``channels`` says cannot deliver here (None: the channels are not checked)."""
    report = get_report(settings.reports_dir, report_id)
    problems = check_report(report, load_datasets(settings.datasets_dir), each_recipient=False)
    if problems:
        more = f" (and {len(problems) - 1} more: see bulletin reports validate)" if len(problems) > 1 else ""
        raise DefinitionError(f"report {report.id!r}: {problems[0]}{more}", field=problems[0].path)
    if channels is not None:
        check_channels(report, settings, channels)
    requested_formats(report.formats, formats)
    resolve_parameters(report, parameters or {}, datetime.now(UTC).date())
    if run_key:
        check_run_key(run_key)
    return report


def check_channels(report: ReportDefinition, settings: Settings, channels: ChannelCheck) -> None:
    """Refuse a report naming a channel that cannot deliver here (a DefinitionError naming it and why)."""
    for i, name in enumerate(report.channels):
        why = channels(name, settings)
        if why is not None:
            raise DefinitionError(f"report {report.id!r}: channels.{i}: {str(name)!r} {why}", field="report_id")


def requested_formats(allowed: Sequence[str], requested: list[str] | None) -> list[str]:
    """The formats to render: the report's own, or those asked for (each once, in the order asked) if it has them."""
    if not requested:
        return list(allowed)
    unknown = [f for f in requested if f not in allowed]
    if unknown:
        raise DefinitionError(f"format {unknown[0]!r} is not one of this report's formats {allowed}", field="formats")
    return list(dict.fromkeys(requested))


def request_run_key(
    report_id: str, requested: str | None, run_id: str, parameters: dict[str, Any] | None, slot: datetime | None
) -> str:
    """The ledger key: the one asked for, else the report and ``slot`` of a run the scheduler made (so two runs of
    one slot send once), else this flow run's own key (a run started by hand is its own run; stable across
    retries)."""
    if requested:
        return check_run_key(requested)
    if slot is not None:
        return scheduled_run_key(report_id, slot, parameters)
    return check_run_key(f"adhoc-{run_id}")
