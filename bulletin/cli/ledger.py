"""``bulletin deliveries ...`` (the ledger) and ``bulletin link`` (a presigned download link)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.table import Table

from bulletin.cli import app
from bulletin.errors import ConfigError, DefinitionError
from bulletin.models import describe_scope
from bulletin.settings import Settings
from bulletin.store import LedgerStatus, Store, audit, list_deliveries, migrate, open_store

deliveries_app = typer.Typer(help="The delivery ledger: what was sent to whom, and with which data scope.")
console = Console()


@contextmanager
def _store() -> Iterator[Store]:
    with open_store(Settings().database) as store:
        migrate(store)
        yield store


@deliveries_app.command("list")
def deliveries_list(
    report: str | None = typer.Option(None, "--report", help="Only this report."),
    recipient: str | None = typer.Option(None, "--recipient", help="Only this recipient ref."),
    status: str | None = typer.Option(None, "--status", help="pending, sent, failed or skipped."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000, help="At most this many rows, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List ledger rows, newest first."""
    if status is not None and status not in {s.value for s in LedgerStatus}:
        raise ConfigError(f"--status must be one of {', '.join(s.value for s in LedgerStatus)}, not {status!r}")
    with _store() as store:
        rows = list_deliveries(store, report_id=report, recipient=recipient, status=status, limit=limit)
    if as_json:
        typer.echo(json.dumps([json.loads(r.model_dump_json()) for r in rows], indent=2))
        return
    table = Table("updated (UTC)", "report", "run key", "recipient", "format", "channel", "status", "tries", "detail")
    for r in rows:
        table.add_row(
            f"{r.updated_at:%Y-%m-%d %H:%M:%S}",
            r.report_id,
            r.run_key,
            r.recipient,
            r.format,
            r.channel,
            r.status.value,
            str(r.attempts),
            r.last_error or r.uri or "",
        )
    console.print(table)


@deliveries_app.command("audit")
def deliveries_audit(
    recipient: str = typer.Argument(..., help="The recipient ref."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Which data scope went to RECIPIENT, when, and as which file."""
    with _store() as store:
        entries = audit(store, recipient)
    if as_json:
        typer.echo(json.dumps([json.loads(e.model_dump_json()) for e in entries], indent=2))
        return
    table = Table("sent (UTC)", "report", "format", "channel", "scope", "file", "sha256", "token jti")
    for e in entries:
        scope = "; ".join(f"{ds}: {describe_scope(groups)}" for ds, groups in (e.secure_filters or {}).items())
        table.add_row(
            f"{e.when:%Y-%m-%d %H:%M:%S}",
            e.report_id,
            e.format,
            e.channel,
            scope,
            e.uri or "",
            (e.sha256 or "")[:12],
            e.token_jti or "",
        )
    console.print(table)


@app.command("link")
def link(
    uri: str = typer.Argument(..., help="An s3://bucket/key URI from a manifest or the ledger."),
    expires: str = typer.Option("24h", "--expires", help="Lifetime: 3600, 90m, 24h or 7d (at most 7 days)."),
) -> None:
    """Print a presigned (SigV4) download link for a delivered S3 object."""
    from tasks.s3 import MAX_EXPIRY_SECONDS, make_s3_client, parse_duration, presign_download

    settings = Settings()
    seconds = parse_duration(expires)
    if seconds > MAX_EXPIRY_SECONDS:
        # Said, not clamped: a link that dies days before the user expects is worse than an error now.
        raise DefinitionError(
            f"--expires {expires} is longer than the maximum of 7 days (7d, {MAX_EXPIRY_SECONDS} s) that a SigV4 "
            "link can last",
            field="expires",
        )
    presigned = presign_download(make_s3_client(settings), uri, expires_seconds=seconds)
    typer.echo(presigned.url)
    typer.echo(f"expires {presigned.expires_at:%Y-%m-%d %H:%M:%S} UTC", err=True)
