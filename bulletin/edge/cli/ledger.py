"""``bulletin deliveries ...`` (the ledger) and ``bulletin link`` (a presigned download link)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.console import Console
from rich.markup import escape

from bulletin.edge.cli.root import app
from bulletin.errors import ConfigError, DefinitionError

if TYPE_CHECKING:
    from rich.table import Table

    from bulletin.store import AuditEntry, Store

# The state store (SQLAlchemy, Alembic) and settings are imported by the commands that use them: `bulletin --help`
# pays for neither (tests/cli/test_startup.py).

deliveries_app = typer.Typer(help="The delivery ledger: what was sent to whom, and with which data scope.")
console = Console()


@contextmanager
def _store() -> Iterator[Store]:
    from bulletin.settings import Settings
    from bulletin.store import migrate, open_store

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
    from rich.table import Table

    from bulletin.store import LedgerStatus, list_deliveries

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
    as_json: bool = typer.Option(False, "--json", help="Print JSON (every field) instead of a table."),
) -> None:
    """Which data scope went to RECIPIENT, when, and as which file. The table shows what fits the terminal (the
    file's name; from 120 columns its whole location, checksum and token id); ``--json`` has every field."""
    from bulletin.store import audit

    with _store() as store:
        entries = audit(store, recipient)
    if as_json:
        typer.echo(json.dumps([json.loads(e.model_dump_json()) for e in entries], indent=2))
        return
    if not entries:
        typer.echo(f"Nothing sent to {recipient} is in the ledger.")
        return
    console.print(audit_table(recipient, entries, width=console.width))


#: From this many columns the audit table has room for whole locations, checksums and token ids.
WIDE_AUDIT = 120


def audit_table(recipient: str, entries: list[AuditEntry], *, width: int) -> Table:
    """The audit as a table for a terminal ``width`` columns wide. Nothing is cut short with an ellipsis: what does
    not fit wraps. Narrow, an entry is two lines: when (date, time) beside its report, channel, format and rows, then
    its file name. From ``WIDE_AUDIT`` columns: the file's whole location, its checksum and the token id. One data
    scope for every entry (the usual case) is said once, under the table."""
    from rich.table import Table

    scopes = {_scope(e) for e in entries}
    shared = len(scopes) == 1
    table = Table(
        title=f"Sent to {escape(recipient)}: {len(entries)} file(s), newest first",
        caption=f"scope: {escape(scopes.pop())}" if shared else None,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title_justify="left",
        caption_justify="left",
    )
    wide = width >= WIDE_AUDIT
    table.add_column("sent (UTC)", no_wrap=True)
    table.add_column("report, location" if wide else "report, file", overflow="fold", ratio=3)
    if not shared:
        table.add_column("scope", overflow="fold", ratio=1)
    if wide:
        table.add_column("sha256, token jti", no_wrap=True)
    for e in entries:
        rows = "" if e.rows is None else f" · {e.rows:,} rows"
        where = (e.uri or "") if wide else file_name(e.uri)
        if e.reason is not None:  # not sent: the person opted out
            where = f"not sent: {e.reason}"
        row = [
            f"{e.when:%Y-%m-%d}\n{e.when:%H:%M:%S}",
            f"[bold]{escape(e.report_id)}[/]  {e.channel} {e.format}{rows}\n{escape(where)}",
        ]
        if not shared:
            row.append(escape(_scope(e)))
        if wide:
            row.append(f"{(e.sha256 or '')[:12]}\n{e.token_jti or ''}")
        table.add_row(*row)
    return table


def file_name(uri: str | None) -> str:
    """The last segment of a file's location (an S3 key, a path, a file:// URL): the name a person looks for. An
    email sent over SMTP is known by its Message-ID, which is kept whole."""
    if not uri:
        return ""
    if uri.startswith("<") and uri.endswith(">"):
        return uri
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _scope(entry: AuditEntry) -> str:
    from bulletin.models import describe_scope

    scopes = [f"{dataset}: {describe_scope(groups)}" for dataset, groups in entry.secure_filters.items()]
    return "; ".join(scopes) or "no secure filter"


@app.command("link")
def link(
    uri: str = typer.Argument(..., help="A delivered file's URI from a manifest or the ledger (s3://bucket/key)."),
    expires: str = typer.Option("24h", "--expires", help="Lifetime: 3600, 90m, 24h or 7d (at most 7 days)."),
) -> None:
    """Print a download link for a delivered file: presigned (SigV4) on S3, its file:// URI in the local bucket."""
    from bulletin.settings import Settings
    from tasks.delivery.channels import make_destination
    from tasks.storage import MAX_LINK_SECONDS, parse_duration

    seconds = parse_duration(expires)
    if seconds > MAX_LINK_SECONDS:
        # Said, not clamped: a link that dies days before the user expects is worse than an error now.
        raise DefinitionError(
            f"--expires {expires} is longer than the maximum of 7 days (7d, {MAX_LINK_SECONDS} s) that a SigV4 "
            "link can last",
            field="expires",
        )
    made = make_destination(Settings()).link(uri, None, seconds)
    typer.echo(made.url)
    if made.expires_at is not None:
        typer.echo(f"expires {made.expires_at:%Y-%m-%d %H:%M:%S} UTC", err=True)
