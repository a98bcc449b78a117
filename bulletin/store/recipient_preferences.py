"""One person's channel preferences: the two levels below the cluster's and the organisation's.

A recipient (its organisation and ref, as the report audiences name it) may have a preference for every report
(``report_id`` ``*``) and one per report. Each lists the channels a report reaches them by (``EMAIL``, ``WEBHOOK``,
``S3``, ``SFTP``); an empty list means they receive nothing. The most specific level wins
(``RunPreferences.for_recipient``): recipient-for-this-report, then recipient, then organisation, then cluster.

They are not per event type (unlike the ThoughtSpot-style levels): a person who unsubscribes wants neither the
scheduled report nor a job's copy of it. An unsubscribe link (``bulletin.unsubscribe``) records a preference for
its one report with ``EMAIL`` removed; the organisation re-subscribes a person through the API or the CLI.

Recipients without an organisation are filed under the organisation ``""``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import JSON, Column, Connection, String, Table, delete, select

from bulletin.store import channel_preferences as cp
from bulletin.store.base import UTCDateTime, aware, metadata
from bulletin.store.channel_preferences import Channel, Channels, EventType, RunPreferences, _upsert, normalise_channels
from bulletin.store.db import Store

#: The ``report_id`` of a recipient's preference for every report.
EVERY_REPORT = "*"

recipient_channel_preferences = Table(
    "recipient_channel_preferences",
    metadata,
    Column("org", String(128), primary_key=True),
    Column("recipient", String(128), primary_key=True),
    Column("report_id", String(128), primary_key=True),
    Column("channels", JSON(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("updated_by", String(40)),
)


@dataclass(frozen=True)
class RecipientPreference:
    """One stored level: ``report_id`` None is the recipient's preference for every report."""

    org: str
    recipient: str
    report_id: str | None
    channels: Channels
    updated_at: datetime
    updated_by: str | None


#: A run's recipient levels: ``(org, ref)`` -> channels, for every report and for the run's report.
RecipientLevels = dict[tuple[str, str], Channels]


def set_preference(
    store: Store,
    *,
    org: str | None,
    recipient: str,
    report_id: str | None,
    channels: Iterable[Channel | str],
    updated_by: str | None,
    now: datetime,
) -> RecipientPreference:
    """Set (insert or replace) one level; ``report_id`` None: every report. ``channels`` empty: nothing."""
    chosen = normalise_channels(channels)
    values = {
        "org": org or "",
        "recipient": recipient,
        "report_id": report_id or EVERY_REPORT,
        "channels": [c.value for c in chosen],
        "updated_at": aware(now),
        "updated_by": updated_by,
    }
    with store.write() as conn:
        _upsert(conn, recipient_channel_preferences, ["org", "recipient", "report_id"], values)
    return RecipientPreference(org or "", recipient, report_id, chosen, aware(now), updated_by)


def clear_preferences(store: Store, *, org: str | None, recipient: str, report_id: str | None) -> int:
    """Remove the recipient's preference for ``report_id``, or every one of theirs when None; how many went."""
    table = recipient_channel_preferences
    where = [table.c.org == (org or ""), table.c.recipient == recipient]
    if report_id is not None:
        where.append(table.c.report_id == report_id)
    with store.write() as conn:
        return conn.execute(delete(table).where(*where)).rowcount or 0


def list_preferences(store: Store, *, org: str | None, recipient: str) -> list[RecipientPreference]:
    """The recipient's own levels: every report's first, then per report by id."""
    table = recipient_channel_preferences
    query = select(table).where(table.c.org == (org or ""), table.c.recipient == recipient)
    with store.read() as conn:
        rows = list(conn.execute(query).mappings())
    found = [
        RecipientPreference(
            org=row["org"],
            recipient=row["recipient"],
            report_id=None if row["report_id"] == EVERY_REPORT else row["report_id"],
            channels=normalise_channels(row["channels"]),
            updated_at=aware(row["updated_at"]),
            updated_by=row["updated_by"],
        )
        for row in rows
    ]
    return sorted(found, key=lambda p: (p.report_id is not None, p.report_id or ""))


def load_levels(conn: Connection, report_id: str) -> tuple[RecipientLevels, RecipientLevels]:
    """Every recipient's preference for every report, and for ``report_id``: what one run needs, in one read."""
    table = recipient_channel_preferences
    query = select(table).where(table.c.report_id.in_([EVERY_REPORT, report_id]))
    every: RecipientLevels = {}
    this: RecipientLevels = {}
    for row in conn.execute(query).mappings():
        target = every if row["report_id"] == EVERY_REPORT else this
        target[(row["org"], row["recipient"])] = normalise_channels(row["channels"])
    return every, this


def load_run_preferences(store: Store, event_type: EventType, report_id: str) -> RunPreferences:
    """Every level a run of ``report_id`` may need: the cluster's and organisations' for ``event_type`` and each
    person's (``load_levels``)."""
    base = cp.load_run_preferences(store, event_type)
    with store.read() as conn:
        every, this = load_levels(conn, report_id)
    return replace(base, recipients=every, recipient_report=this)


def unsubscribe_email(
    store: Store, *, org: str, recipient: str, report_id: str, updated_by: str, now: datetime
) -> RecipientPreference:
    """Record that the person wants no more of ``report_id`` by email (a one-click unsubscribe). Idempotent.

    Their preference for the report becomes what they had without ``EMAIL``: their own preference for the report,
    else theirs for every report, else their organisation's (else the cluster's) for scheduled deliveries, else
    every channel. So an unsubscribe turns email off and nothing else on.
    """
    chosen = _current_channels(store, org=org, recipient=recipient, report_id=report_id)
    kept = [c for c in chosen if c is not Channel.EMAIL]
    return set_preference(
        store, org=org, recipient=recipient, report_id=report_id, channels=kept, updated_by=updated_by, now=now
    )


def _current_channels(store: Store, *, org: str, recipient: str, report_id: str) -> Channels:
    run = load_run_preferences(store, EventType.REPORT_SCHEDULE, report_id)
    chosen, _ = run.for_recipient(org or None, recipient)
    return tuple(Channel) if chosen is None else chosen
