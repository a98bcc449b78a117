"""``bulletin run`` and ``bulletin demo``: deliver reports through the deliver-report flow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from bulletin import progress
from bulletin.edge.cli.options import environment, parse_params
from bulletin.edge.cli.root import app
from bulletin.edge.cli.terminal_logs import terminal_logs
from bulletin.errors import BulletinError

if TYPE_CHECKING:
    from rich.table import Table

    from bulletin.models import Manifest

# What a command needs beyond Typer and Rich (settings, models, the flow: Prefect) is imported when it runs, so that
# `bulletin --help` and the other commands never pay for it (tests/cli/test_startup.py holds this).

# Wide enough for the summary table when the output is a file or a CI log rather than a terminal.
console = Console(width=None if Console().is_terminal else 160)


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[None]:
    """A progress bar over recipients while flows run in this process; nothing when not on a terminal."""
    if not enabled or not console.is_terminal:
        yield
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    tasks: dict[str, Any] = {}
    troubles: dict[str, dict[str, int]] = {}  # per report: how many recipients ended partial, failed

    def listener(report_id: str, event: str, detail: str) -> None:
        if event == "planned":
            tasks[report_id] = bar.add_task(report_id, total=int(detail))
        elif report_id in tasks:
            if event in {"PARTIAL", "FAILED"}:  # said as they happen, not only in the table at the end
                counts = troubles.setdefault(report_id, {})
                counts[event.lower()] = counts.get(event.lower(), 0) + 1
                said = ", ".join(f"{n} {status}" for status, n in counts.items())
                bar.update(tasks[report_id], description=f"{report_id} ({said})")
            bar.advance(tasks[report_id])

    with bar, progress.listening(listener):
        yield


def run_report(
    report_id: str,
    *,
    recipients: list[str] | None = None,
    formats: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
    dry_run: bool = False,
    run_key: str | None = None,
) -> Manifest:
    """Run the deliver-report flow in this process and return its manifest, whatever its final state.

    A request that cannot start (unknown report or format, bad parameter) is refused here, before Prefect starts:
    no flow run is created for it.
    """
    from bulletin.models import Manifest
    from bulletin.requests import check_request
    from bulletin.settings import Settings
    from flows.deliver_report import deliver_report
    from tasks.delivery.registry import channel_problem

    check_request(
        Settings(), report_id, formats=formats, parameters=parameters, run_key=run_key, channels=channel_problem
    )

    state = deliver_report(
        report_id,
        recipients=recipients or None,
        formats=formats or None,
        parameters=parameters or None,
        dry_run=dry_run,
        run_key=run_key,
        return_state=True,
    )
    result = state.result(raise_on_failure=False)
    if isinstance(result, Manifest):
        return result
    if isinstance(result, BulletinError):
        raise result
    raise BulletinError(f"the flow run ended {state.type.value}: {state.message or result}")


def _summary(manifests: list[Manifest]) -> Table:
    from rich.table import Table

    table = Table("report", "recipient", "status", "rows", "files by channel (outcome)", "note")
    colours = {"DELIVERED": "green", "PARTIAL": "dark_orange", "SKIPPED": "yellow", "FAILED": "red"}
    for manifest in manifests:
        for delivery in manifest.deliveries:
            by_channel: dict[str, list[str]] = {}
            for a in delivery.artifacts:
                by_channel.setdefault(f"{a.channel} ({a.outcome.replace('_', ' ')})", []).append(a.format)
            # A failed file's note is its error, which ``delivery.error`` already says per channel.
            notes = {a.note for a in delivery.artifacts if a.note and a.note != "attached" and a.outcome != "failed"}
            table.add_row(
                manifest.report_id,
                delivery.recipient,
                f"[{colours[delivery.status.value]}]{delivery.status.value.lower()}[/]",
                str(max((a.rows for a in delivery.artifacts), default=0)),
                "; ".join(f"{ch}: {' '.join(fmts)}" for ch, fmts in by_channel.items()),
                "; ".join([*([delivery.error] if delivery.error else []), *sorted(notes)]),
            )
    return table


def _print(manifests: list[Manifest], as_json: bool) -> None:
    if as_json:
        payload = [json.loads(m.model_dump_json()) for m in manifests]
        typer.echo(json.dumps(payload if len(payload) != 1 else payload[0], indent=2))
        return
    console.print(_summary(manifests))
    for m in manifests:
        console.print(
            f"{m.report_id}: [bold]{m.status.value}[/] ({m.tally}), run {m.run_id}" + (f"; {m.note}" if m.note else ""),
            highlight=False,
        )


@app.command("run")
def run(
    report_id: str = typer.Argument(..., help="The report to deliver."),
    recipients: list[str] = typer.Option([], "--recipient", help="Only this recipient ref (repeat)."),
    formats: list[str] = typer.Option([], "--format", help="Only this format (repeat)."),
    params: list[str] = typer.Option([], "--param", help="Report parameter KEY=VALUE (repeat)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Render into a temporary folder; store nothing."),
    run_key: str | None = typer.Option(
        None, "--run-key", help="Ledger key: a re-run with the same key sends only what was not sent."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Deliver one report now, through the deliver-report flow. Exits 0 only if no delivery failed."""
    with terminal_logs(), _progress_bar(not as_json):
        manifest = run_report(
            report_id,
            recipients=recipients,
            formats=formats,
            parameters=parse_params(params),
            dry_run=dry_run,
            run_key=run_key,
        )
    _print([manifest], as_json)
    from bulletin.models import RunStatus

    if manifest.status is not RunStatus.COMPLETED:
        raise typer.Exit(1)


@app.command("demo")
def demo(
    out: Path | None = typer.Option(None, "--out", help="Folder for the delivered files. Default: <home>/bucket."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifests as JSON."),
    chain: bool = typer.Option(
        True,
        "--chain/--no-chain",
        help="Also run the webhook chain: dbt webhook -> report -> run.completed -> refresh.",
    ),
) -> None:
    """Build the demo warehouse and keys if missing, deliver every demo report to every demo recipient, then show
    the signed-webhook chain through the HTTP API."""
    # The flows read settings from the environment: point them at ``out`` for the demo only.
    overrides = {"BULLETIN_BUCKET_DIR": str(out.resolve())} if out is not None else {}
    with environment(**overrides), terminal_logs():
        _demo(as_json, chain)


def _demo(as_json: bool, chain: bool) -> None:
    from bulletin.demo_data import build_demo_warehouse, demo_end_date, demo_warehouse_ready, yesterday
    from bulletin.models import RunStatus
    from bulletin.reports import load_reports
    from bulletin.settings import Settings
    from tasks.tokens import load_keyset

    settings = Settings()
    # Sales up to yesterday: the day the webhook chain's runs (which take their defaults) report on.
    through = yesterday()
    if settings.warehouse_url is None and not demo_warehouse_ready(Path(settings.warehouse), through=through):
        with console.status("Building the demo warehouse (1,200,000 sales rows)...", spinner="dots"):
            build_demo_warehouse(Path(settings.warehouse), end_date=through)
    load_keyset(settings, create=True)
    reports = load_reports(settings.reports_dir)
    # As of the warehouse's last day (yesterday, unless BULLETIN_WAREHOUSE_URL names an older demo warehouse).
    last_day = demo_end_date(Path(settings.warehouse))
    manifests = []
    with _progress_bar(not as_json):
        for report_id, report in reports.items():
            params = {"as_of": last_day.isoformat()} if last_day and "as_of" in report.parameters else {}
            manifests.append(run_report(report_id, parameters=params))
    story = None
    if chain:
        from bulletin.edge.cli.demo_chain import run_chain

        with console.status("Webhook chain: dbt webhook -> report run -> run.completed webhook -> refresh..."):
            result = run_chain(settings.manifests_dir)
        manifests += [result.upstream, result.dependent]
        story = (
            f"Webhook chain: signed dbt job.run.completed -> {result.upstream.report_id} "
            f"(run {result.upstream.run_id}, {result.upstream.status.value}) -> signed run.completed webhook -> "
            f"refresh -> {result.dependent.report_id} (run {result.dependent.run_id}, {result.dependent.status.value})"
        )
    _print(manifests, as_json)
    if story and not as_json:
        console.print(story, highlight=False)
    if not as_json:
        from tasks.delivery.channels import choose_destination

        where = choose_destination(settings).where
        mail = f"SMTP {settings.smtp_host}" if settings.smtp_host else str(settings.outbox_path)
        console.print(f"Files are in {where}; emails in {mail}", highlight=False)
    if any(m.status is not RunStatus.COMPLETED for m in manifests):
        raise typer.Exit(1)
