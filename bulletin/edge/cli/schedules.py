"""``bulletin schedules ...``: when a report runs next, and which scheduled runs were missed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from bulletin.errors import RequestError

if TYPE_CHECKING:
    from bulletin.reports import ReportDefinition, Schedule
    from bulletin.schedules import PreviewRun

# Settings, report definitions and the cron machinery are imported by the commands: `bulletin --help` pays for
# none of them (tests/cli/test_startup.py).

schedules_app = typer.Typer(help="When reports run: their next slots, and the scheduled runs that were missed.")
# Wide enough for the tables when the output is a file or a CI log rather than a terminal.
console = Console(width=None if Console().is_terminal else 160)


@schedules_app.command("preview")
def preview(
    report_id: str = typer.Argument(..., help="The report id."),
    count: int = typer.Option(5, "--next", min=1, max=1_000, help="How many upcoming runs per schedule."),
    after: str | None = typer.Option(
        None,
        "--after",
        help="Start from this moment instead of now: ISO 8601, e.g. 2026-11-01T00:00:00Z (UTC if no zone).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """The next run times of each of REPORT_ID's schedules, in the schedule's time zone and in UTC, with DST changes
    marked."""
    from rich.table import Table

    from bulletin.reports import get_report
    from bulletin.schedules import preview_runs
    from bulletin.settings import Settings

    report = get_report(Settings().reports_dir, report_id)
    start = _parse_moment(after) if after else datetime.now(UTC)
    previews = [
        (schedule, preview_runs(schedule.cron_expression, schedule.timezone, after=start, count=count))
        for schedule in report.schedules
    ]
    if as_json:
        typer.echo(json.dumps([_schedule_json(report, s, runs) for s, runs in previews], indent=2))
        return
    if not previews:
        console.print(f"{report.id} has no schedule: it runs only when started (bulletin run, the API or a trigger).")
        return
    for number, (schedule, runs) in enumerate(previews, start=1):
        console.print(
            f"[bold]schedule {number}[/]: {_describe(schedule)}; {_policy(report, schedule)}", highlight=False
        )
        table = Table("#", f"local time ({schedule.timezone})", "UTC", "")
        for index, run in enumerate(runs, start=1):
            table.add_row(
                str(index),
                f"{run.local:%a %Y-%m-%d %H:%M} {run.zone_abbreviation} ({run.utc_offset})",
                f"{run.utc:%Y-%m-%d %H:%M}Z",
                f"clocks changed before this run (now UTC{run.utc_offset})" if run.dst_change else "",
            )
        console.print(table)


@schedules_app.command("missed")
def missed(
    report: str | None = typer.Option(None, "--report", help="Only this report."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000, help="At most this many runs, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Scheduled runs that delivered nothing because they started too late or were superseded (from the saved
    manifests)."""
    from rich.table import Table

    from bulletin.models import RunStatus
    from bulletin.settings import Settings
    from tasks.delivery.manifest import list_manifests  # imports Prefect: only this command pays for it

    manifests = list_manifests(Settings().manifests_dir, report_id=report, status=RunStatus.MISSED, limit=limit)
    if as_json:
        payload = [
            {
                "report_id": m.report_id,
                "run_id": m.run_id,
                "run_key": m.run_key,
                "at": m.started_at.isoformat(),
                "reason": m.note,
            }
            for m in manifests
        ]
        typer.echo(json.dumps(payload, indent=2))
        return
    table = Table("at (UTC)", "report", "run key", "reason")
    for m in manifests:
        table.add_row(f"{m.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}", m.report_id, m.run_key or "", m.note or "")
    console.print(table)


def _parse_moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise RequestError(
            f"--after: {text!r} is not an ISO 8601 date or time, e.g. 2026-11-01T00:00:00Z", field="after"
        ) from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _describe(schedule: Schedule) -> str:
    cron = f"cron '{schedule.cron_expression}'"
    what = f"{schedule.preset} ({cron})" if schedule.preset else cron
    params = f", parameters {schedule.parameters}" if schedule.parameters else ""
    return f"{what} in {schedule.timezone}{params}"


def _tolerance_seconds(report: ReportDefinition, schedule: Schedule) -> int:
    from bulletin.missed import default_tolerance

    if report.tolerance_seconds is not None:
        return report.tolerance_seconds
    return int(default_tolerance(schedule.cron_expression).total_seconds())


def _policy(report: ReportDefinition, schedule: Schedule) -> str:
    from bulletin.missed import describe_span

    span = describe_span(timedelta(seconds=_tolerance_seconds(report, schedule)))
    return f"a run later than {span} after its slot is missed; catch_up {report.catch_up}"


def _schedule_json(report: ReportDefinition, schedule: Schedule, runs: list[PreviewRun]) -> dict[str, Any]:
    return {
        "schedule": {
            "cron": schedule.cron_expression,
            "preset": schedule.preset,
            "timezone": schedule.timezone,
            "parameters": schedule.parameters,
        },
        "tolerance_seconds": _tolerance_seconds(report, schedule),
        "catch_up": report.catch_up,
        "runs": [
            {
                "local": run.local.isoformat(),
                "utc": run.utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "zone": run.zone_abbreviation,
                "utc_offset": run.utc_offset,
                "dst_change": run.dst_change,
            }
            for run in runs
        ],
    }
