"""``bulletin reports ...``: list and validate report definitions."""

from __future__ import annotations

import json

import typer
from rich.console import Console

from bulletin.errors import DefinitionError

# Settings and the definitions (pydantic models) are imported by the commands: `bulletin --help` pays for neither.

reports_app = typer.Typer(help="List and validate report definitions.", no_args_is_help=True)
console = Console()


@reports_app.command("list")
def list_reports(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the report definitions with their dataset, formats, audience and schedule."""
    from rich.table import Table

    from bulletin.reports import load_reports
    from bulletin.settings import Settings

    settings = Settings()
    reports = load_reports(settings.reports_dir)
    rows = [
        {
            "id": r.id,
            "title": r.title,
            "dataset": r.dataset,
            "formats": r.formats,
            "audience": f"query:{r.audience.query.table}"
            if r.audience.query
            else f"{len(r.audience.recipients)} inline",
            "schedules": [f"{s.cron_expression} {s.timezone}" for s in r.schedules],
            "channels": r.channels,
        }
        for r in reports.values()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("id", "title", "dataset", "formats", "audience", "schedule", "channels")
    for row in rows:
        table.add_row(
            str(row["id"]),
            str(row["title"]),
            str(row["dataset"]),
            ", ".join(row["formats"]),
            str(row["audience"]),
            "; ".join(row["schedules"]) or "-",
            ", ".join(row["channels"]),
        )
    console.print(table)


@reports_app.command("validate")
def validate() -> None:
    """Validate every report definition against the dataset registry and its audience; exit non-zero if any is
    wrong, naming the file, the field path and the bad value of every problem."""
    from bulletin.datasets import load_datasets
    from bulletin.report_checks import validate_reports
    from bulletin.settings import Settings

    settings = Settings()
    ok, errors = validate_reports(settings.reports_dir, load_datasets(settings.datasets_dir))
    for report_id in ok:
        console.print(f"[green]ok[/] {report_id}", highlight=False)
    for error in errors:
        Console(stderr=True).print(f"[bold red]invalid[/] {error}", highlight=False, soft_wrap=True)
    if errors:
        raise DefinitionError(f"{len(errors)} problem(s) in the report definitions; {len(ok)} report(s) are valid")
    if not ok:
        raise DefinitionError(f"no report definitions in {settings.reports_dir}")
