"""``bulletin preferences ...``: one person's channel preferences (the levels below the organisation's), as the
API's ``/v1/recipients/{ref}/preferences`` sets them: ``show``, ``set`` and ``clear``.

A person is a recipient ref of an organisation. ``--org`` names it; without it, the ref is looked up in the report
audiences, and must belong to exactly one organisation. ``set --channels EMAIL`` (or ``clear``) re-subscribes a
person who used an unsubscribe link.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

from bulletin.errors import NotFoundError, RequestError

if TYPE_CHECKING:
    from bulletin.settings import Settings
    from bulletin.store import Store

# The store, the reports and the warehouse are imported by the commands: `bulletin --help` pays for none of them.

preferences_app = typer.Typer(
    help="One person's channel preferences: for every report, and per report (most specific wins).",
    no_args_is_help=True,
)
_ORG = typer.Option(None, "--org", help="The recipient's organisation. Default: found in the report audiences.")
_REPORT = typer.Option(None, "--report", help="Only this report's level. Default: the level for every report.")
_CHANNELS = "EMAIL, WEBHOOK, S3, SFTP"


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    from bulletin.store import migrate, open_store

    with open_store(settings.database) as store:
        migrate(store)
        yield store


def _org_of(settings: Settings, ref: str, org: str | None) -> str | None:
    """``org``, else the one organisation whose report audiences hold ``ref``."""
    if org is not None:
        return org
    from bulletin.reports import load_reports
    from tasks.audience import find_recipients
    from tasks.warehouse import Warehouse

    found = find_recipients(load_reports(settings.reports_dir).values(), Warehouse(settings.warehouse), ref)
    if not found:
        raise NotFoundError(f"no recipient {ref!r} in the report audiences: give --org", field="ref")
    if len(found) > 1:
        orgs = ", ".join(sorted(r.org or "(none)" for r in found))
        raise RequestError(f"recipient {ref!r} is in several organisations ({orgs}): give --org", field="org")
    return found[0].org


def _parse_channels(text: str | None, nothing: bool) -> list[str]:
    from bulletin.store.channel_preferences import Channel

    if nothing == (text is not None):
        raise RequestError("give --channels (a comma-separated list) or --none, not both", field="channels")
    if nothing:
        return []
    names = [c.strip().upper() for c in (text or "").split(",") if c.strip()]
    unknown = [n for n in names if n not in Channel.__members__]
    if unknown or not names:
        raise RequestError(f"--channels takes {_CHANNELS}; got {text!r}", field="channels")
    return names


def _show(store: Store, org: str | None, ref: str, as_json: bool) -> None:
    from bulletin.store.recipient_preferences import list_preferences

    levels = list_preferences(store, org=org, recipient=ref)
    if as_json:
        rows = [{"report_id": p.report_id, "channels": list(p.channels), "updated_by": p.updated_by} for p in levels]
        typer.echo(json.dumps({"recipient": ref, "org": org or "", "preferences": rows}, indent=2))
        return
    if not levels:
        typer.echo(f"{ref} ({org or 'no organisation'}) has no preference of their own: the organisation's applies.")
        return
    for p in levels:
        which = "every report" if p.report_id is None else p.report_id
        typer.echo(f"{which}: {', '.join(c.value for c in p.channels) or 'nothing'} (by {p.updated_by or '?'})")


@preferences_app.command("show")
def show(
    ref: str = typer.Argument(..., help="The recipient ref."),
    org: str | None = _ORG,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """REF's own levels: for every report, and per report."""
    from bulletin.settings import Settings

    settings = Settings()
    who = _org_of(settings, ref, org)
    with _store(settings) as store:
        _show(store, who, ref, as_json)


@preferences_app.command("set")
def set_(
    ref: str = typer.Argument(..., help="The recipient ref."),
    channels: str | None = typer.Option(None, "--channels", help=f"Comma-separated, of {_CHANNELS}."),
    nothing: bool = typer.Option(False, "--none", help="The person receives nothing."),
    report: str | None = _REPORT,
    org: str | None = _ORG,
) -> None:
    """Set REF's channels for every report, or for --report; it wins over the organisation's and the cluster's."""
    from bulletin.reports import get_report
    from bulletin.settings import Settings
    from bulletin.store.recipient_preferences import set_preference

    chosen = _parse_channels(channels, nothing)
    settings = Settings()
    if report is not None:
        get_report(settings.reports_dir, report)
    who = _org_of(settings, ref, org)
    with _store(settings) as store:
        set_preference(
            store, org=who, recipient=ref, report_id=report, channels=chosen, updated_by="cli", now=datetime.now(UTC)
        )
        _show(store, who, ref, False)


@preferences_app.command("clear")
def clear(
    ref: str = typer.Argument(..., help="The recipient ref."), report: str | None = _REPORT, org: str | None = _ORG
) -> None:
    """Remove REF's level for --report, or every level of theirs: the next level applies again."""
    from bulletin.settings import Settings
    from bulletin.store.recipient_preferences import clear_preferences

    settings = Settings()
    who = _org_of(settings, ref, org)
    with _store(settings) as store:
        removed = clear_preferences(store, org=who, recipient=ref, report_id=report)
        typer.echo(f"removed {removed} preference(s) of {ref}")
        _show(store, who, ref, False)
