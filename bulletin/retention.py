"""Retention: how long each kind of data is kept, and which of it is due for deletion. Pure: no I/O here.

The settings give a number of days per kind (``BULLETIN_RETENTION_*_DAYS``); a report may keep its files for a
different number of days (``retention: {files_days: N}``); inbound message ids are kept at least as long as the
longest replay window of the triggers, so that a replay still inside the window is still recognised. ``build_policy``
puts these together once, at the edge; ``cutoffs`` turns the policy and the clock into one instant per kind: what is
older than its instant is due. ``bulletin.store.retention`` and ``tasks.retention`` do the deleting.

Age is measured from the last change of a thing, never from its creation: a ledger run key from the newest change of
any of its rows, a webhook message from when it finished, a file from its modification time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from bulletin.clock import require_aware
from bulletin.errors import ConfigError
from bulletin.reports import ReportDefinition
from bulletin.triggers import Trigger

DAY = timedelta(days=1)

#: A delivered file's name: ``<report_id>-<YYYYmmddTHHMMSSZ>-<run_id>[-<n>].<ext>`` (tasks/storage/base.py).
_FILE_NAME = re.compile(r"^(?P<report>[A-Za-z0-9][A-Za-z0-9_-]*?)-\d{8}T\d{6}Z-[^/]+\.[a-z0-9]+$")


class Kind(StrEnum):
    """The kinds of data Bulletin prunes, in the order ``bulletin prune`` reports them."""

    LEDGER = "ledger"
    WEBHOOK_ATTEMPTS = "webhook_attempts"
    WEBHOOK_MESSAGES = "webhook_messages"
    INBOUND_RECEIPTS = "inbound_receipts"
    SCHEDULED_EVENT_INVOCATIONS = "scheduled_event_invocations"
    SCHEDULED_EVENTS = "scheduled_events"
    MANIFESTS = "manifests"
    FILES = "files"
    S3_FILES = "s3_files"


@dataclass(frozen=True)
class RetentionPolicy:
    """Days kept per kind; ``files_by_report`` holds the reports whose files are kept for another number of days.

    ``inbound_days`` is already raised to the replay window; ``inbound_floor`` says which trigger raised it (or None).
    ``ledger_days`` is already raised to the longest ``tolerance_seconds`` of a report; ``ledger_floor`` says which.
    """

    ledger_days: int
    webhooks_days: int
    inbound_days: int
    scheduled_events_days: int
    manifests_days: int
    files_days: int
    files_by_report: Mapping[str, int] = field(default_factory=dict)
    inbound_floor: str | None = None
    ledger_floor: str | None = None

    def days(self, kind: Kind) -> int:
        """Days kept for ``kind`` (files: the default, before any report's override)."""
        return {
            Kind.LEDGER: self.ledger_days,
            Kind.WEBHOOK_ATTEMPTS: self.webhooks_days,
            Kind.WEBHOOK_MESSAGES: self.webhooks_days,
            Kind.INBOUND_RECEIPTS: self.inbound_days,
            Kind.SCHEDULED_EVENT_INVOCATIONS: self.scheduled_events_days,
            Kind.SCHEDULED_EVENTS: self.scheduled_events_days,
            Kind.MANIFESTS: self.manifests_days,
            Kind.FILES: self.files_days,
            Kind.S3_FILES: self.files_days,
        }[kind]

    def files_days_of(self, report_id: str | None) -> int:
        """Days a file of ``report_id`` is kept: its report's override, else the default (also for unknown ones)."""
        if report_id is None:
            return self.files_days
        return self.files_by_report.get(report_id, self.files_days)

    @property
    def longest_files_days(self) -> int:
        """The longest any file is kept: what a bucket-wide lifecycle rule may expire at, and no sooner."""
        return max([self.files_days, *self.files_by_report.values()])

    @property
    def files_days_differ(self) -> bool:
        """Whether some files are kept for less than the longest retention: then a bucket-wide lifecycle rule
        (which expires at the longest) is not enough, and the prune lists the bucket to delete those sooner."""
        return any(days < self.longest_files_days for days in [self.files_days, *self.files_by_report.values()])


def replay_window(trigger: Trigger) -> timedelta | None:
    """How long after it was sent a copy of a message would still verify, or None when nothing signed says when
    it was sent (GitHub): then only the receipt stops a replay, however old."""
    verify = trigger.verify
    if verify.scheme == "standard-webhooks":
        return timedelta(seconds=verify.tolerance_seconds)
    if verify.scheme in {"dbt-cloud", "jwt-es256"}:
        return timedelta(seconds=verify.max_age + verify.tolerance_seconds)
    return None


def inbound_floor(triggers: Iterable[Trigger]) -> tuple[int, str | None]:
    """The fewest whole days inbound receipts must be kept for every trigger's replay window, and the trigger that
    needs the most (None when no trigger has a bounded window)."""
    longest: tuple[timedelta, str | None] = (timedelta(0), None)
    for trigger in sorted(triggers, key=lambda t: t.id):
        window = replay_window(trigger)
        if window is not None and window > longest[0]:
            longest = (window, trigger.id)
    return max(1, math.ceil(longest[0] / DAY)), longest[1]


def ledger_floor(reports: Iterable[ReportDefinition]) -> tuple[int, str | None]:
    """The fewest whole days the ledger must keep a run key so that a scheduled run of its slot, which may start as
    late as the report's ``tolerance_seconds`` after it, still finds what was sent; and the report that needs the
    most (None: no report sets a tolerance over a day; the defaults are at most 6 h)."""
    longest: tuple[int, str | None] = (0, None)
    for report in sorted(reports, key=lambda r: r.id):
        if report.tolerance_seconds is not None and report.tolerance_seconds > longest[0]:
            longest = (report.tolerance_seconds, report.id)
    return max(1, math.ceil(longest[0] / DAY.total_seconds())), longest[1]


def build_policy(
    days: Mapping[str, int], reports: Iterable[ReportDefinition], triggers: Iterable[Trigger]
) -> RetentionPolicy:
    """The policy from the settings' ``retention_*_days`` values (keys without the prefix and suffix: ``files``,
    ``manifests``, ``ledger``, ``webhooks``, ``inbound``, ``scheduled_events``), the reports and the triggers."""
    wanted = {"files", "manifests", "ledger", "webhooks", "inbound", "scheduled_events"}
    missing = sorted(wanted - set(days))
    if missing:
        raise ConfigError(f"no retention given for {', '.join(missing)}", field=f"retention_{missing[0]}_days")
    for name in sorted(wanted):
        if not isinstance(days[name], int) or isinstance(days[name], bool) or days[name] < 1:
            raise ConfigError(
                f"BULLETIN_RETENTION_{name.upper()}_DAYS must be a whole number of days, at least 1",
                field=f"retention_{name}_days",
            )
    floor, needed_by = inbound_floor(triggers)
    raised = needed_by if floor > days["inbound"] else None
    reports = list(reports)
    ledger_days, ledger_needed_by = ledger_floor(reports)
    overrides = {r.id: r.retention.files_days for r in reports if r.retention is not None}
    return RetentionPolicy(
        ledger_days=max(days["ledger"], ledger_days),
        ledger_floor=ledger_needed_by if ledger_days > days["ledger"] else None,
        webhooks_days=days["webhooks"],
        inbound_days=max(days["inbound"], floor),
        scheduled_events_days=days["scheduled_events"],
        manifests_days=days["manifests"],
        files_days=days["files"],
        files_by_report=dict(sorted(overrides.items())),
        inbound_floor=raised,
    )


def cutoff(now: datetime, days: int) -> datetime:
    """The instant before which something kept ``days`` days is due: exactly ``days`` x 24 h before ``now``.

    Due means strictly older: a thing changed at the cutoff itself, or one second after it, stays."""
    return require_aware(now, "the clock", field="now") - days * DAY


def cutoffs(policy: RetentionPolicy, now: datetime) -> dict[Kind, datetime]:
    """One cutoff per kind (files: the default's; a report's own is ``cutoff(now, policy.files_days_of(id))``)."""
    return {kind: cutoff(now, policy.days(kind)) for kind in Kind}


def report_of_file(name: str) -> str | None:
    """The report a delivered file belongs to, read from its name; None for a name Bulletin did not make."""
    match = _FILE_NAME.match(name)
    return match["report"] if match else None


def file_is_due(name: str, modified: datetime, policy: RetentionPolicy, now: datetime) -> bool:
    """Whether a delivered file (its name, its last modification) is past its report's retention."""
    return modified < cutoff(now, policy.files_days_of(report_of_file(name)))


def describe_policy(policy: RetentionPolicy) -> list[tuple[str, int, str]]:
    """The policy as rows of (what, days, note), for ``bulletin prune`` and the prune flow's artifact."""
    inbound_note = f"raised to the replay window of trigger {policy.inbound_floor!r}" if policy.inbound_floor else ""
    ledger_note = "per run key, from its newest row"
    if policy.ledger_floor:
        ledger_note += f"; raised to the tolerance_seconds of report {policy.ledger_floor!r}"
    rows = [
        ("delivery ledger and audit", policy.ledger_days, ledger_note),
        ("webhook messages and attempts", policy.webhooks_days, "finished messages only"),
        ("inbound receipts", policy.inbound_days, inbound_note),
        ("scheduled events and invocations", policy.scheduled_events_days, "processed or cancelled events only"),
        ("manifests", policy.manifests_days, ""),
        ("files", policy.files_days, ""),
    ]
    rows.extend((f"files of {report}", days, "the report's own") for report, days in policy.files_by_report.items())
    return rows
