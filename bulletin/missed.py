"""The missed-run policy: may a scheduled run that starts now still deliver?

Prefect never drops a late run: a worker that was down overnight starts every slot it missed, one after another.
For reports that is wrong (yesterday's 07:00 report arriving at 15:00, or seven copies of an hourly one), so every
scheduled run asks here first. A run is

- ``MISSED`` when it starts later than its slot plus the report's ``tolerance_seconds`` (Hasura's term);
- ``SUPERSEDED`` when ``catch_up`` is ``latest`` and the schedule's next slot is already due: only the newest runs;
- ``ON_TIME`` otherwise.

Ad-hoc runs never come here. Pure: the clock is an argument, and nothing here imports Prefect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from bulletin.reports import ReportDefinition, Schedule
from bulletin.schedules import is_slot, next_run, schedule_period

CatchUp = Literal["latest", "all"]

#: The default tolerance of a schedule whose period is a day or longer; shorter schedules get one period.
DAILY_TOLERANCE = timedelta(hours=6)


class Verdict(StrEnum):
    ON_TIME = "ON_TIME"
    MISSED = "MISSED"
    SUPERSEDED = "SUPERSEDED"


@dataclass(frozen=True)
class Decision:
    """What a scheduled run may do, and why. ``newer_slot``: the due slot that supersedes this one."""

    verdict: Verdict
    slot: datetime
    tolerance: timedelta
    reason: str
    newer_slot: datetime | None = None

    @property
    def delivers(self) -> bool:
        return self.verdict is Verdict.ON_TIME


def default_tolerance(cron: str) -> timedelta:
    """6 h for a schedule whose period is a day or longer, else one period (60 s for every minute)."""
    period = schedule_period(cron)
    return DAILY_TOLERANCE if period >= timedelta(days=1) else period


def decide_run(
    slot: datetime,
    now: datetime,
    schedules: Sequence[Schedule],
    *,
    tolerance_seconds: int | None = None,
    catch_up: CatchUp = "latest",
) -> Decision:
    """Decide for a run of scheduled ``slot`` starting at ``now`` (both aware).

    The run belongs to the schedules of which ``slot`` is a slot (all of them if none matches, e.g. after a DST
    change that Prefect placed differently). With several, the most lenient answer wins: the longest default
    tolerance, and superseded only when every one of them has a newer slot due. When unsure, deliver.
    """
    slot_utc = slot.astimezone(UTC)
    now_utc = now.astimezone(UTC)
    candidates = [s for s in schedules if is_slot(s.cron_expression, s.timezone, slot_utc)] or list(schedules)
    if tolerance_seconds is not None:
        tolerance = timedelta(seconds=tolerance_seconds)
    elif candidates:
        tolerance = max(default_tolerance(s.cron_expression) for s in candidates)
    else:
        tolerance = DAILY_TOLERANCE
    late = now_utc - slot_utc
    if late > tolerance:
        reason = (
            f"missed: started {describe_span(late)} after its slot {_utc(slot_utc)}, later than the tolerance of "
            f"{describe_span(tolerance)}; nothing delivered"
        )
        return Decision(Verdict.MISSED, slot_utc, tolerance, reason)
    newer = _newest_next_slot(candidates, slot_utc) if catch_up == "latest" else None
    if newer is not None and newer <= now_utc:
        reason = (
            f"superseded: the slot {_utc(slot_utc)} started after the next slot {_utc(newer)} was already due, and "
            "catch_up is 'latest' (only the newest slot delivers); nothing delivered"
        )
        return Decision(Verdict.SUPERSEDED, slot_utc, tolerance, reason, newer_slot=newer)
    return Decision(Verdict.ON_TIME, slot_utc, tolerance, f"on time: started {describe_span(late)} after its slot")


def decide_report_run(report: ReportDefinition, slot: datetime, now: datetime) -> Decision:
    """``decide_run`` with the report's schedules and policy."""
    return decide_run(slot, now, report.schedules, tolerance_seconds=report.tolerance_seconds, catch_up=report.catch_up)


def _newest_next_slot(schedules: Sequence[Schedule], slot: datetime) -> datetime | None:
    following = [next_run(s.cron_expression, s.timezone, after=slot) for s in schedules]
    if not following or any(f is None for f in following):
        return None
    return max(f.astimezone(UTC) for f in following if f is not None)


def describe_span(span: timedelta) -> str:
    """``45 s``, ``12 min 5 s``, ``6 h 1 s``, ``2 d 3 h``: a duration for a log line, to the second below a day
    (so "6 h 1 s after" never reads as "6 h" against a tolerance of 6 h). Negative spans read as 0 s."""
    seconds = max(0, int(span.total_seconds()))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    units = [(days, "d"), (hours, "h")] + ([] if days else [(minutes, "min"), (secs, "s")])
    return " ".join(f"{value} {unit}" for value, unit in units if value) or "0 s"


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
