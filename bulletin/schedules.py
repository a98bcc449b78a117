"""Schedules people understand: presets and cron expressions, each in an IANA time zone.

Pure functions over ``cronsim``. Prefect 3.8.8's server schedules with a vendored ``croniter`` and DST arithmetic of
its own; the two agree on every slot except those inside the hour a DST change skips or repeats (measured in New
York: ``30 2 * * *`` on 2026-03-08 is 07:00Z here and 06:30Z in Prefect; ``0 * * * *`` on 2026-11-01 fires at 06:00Z,
the second 01:00, here but not in Prefect). The missed-run policy copes with both: a slot it does not recognise
counts against all of the report's schedules.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

_DAYS = {
    "sunday": 0,
    "monday": 1,
    "tuesday": 2,
    "wednesday": 3,
    "thursday": 4,
    "friday": 5,
    "saturday": 6,
}
_TIME = r"(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)"
_PRESETS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^every minute$"), "* * * * *"),
    (re.compile(r"^every hour$"), "0 * * * *"),
    (re.compile(rf"^daily at {_TIME}$"), "{m} {h} * * *"),
    (re.compile(rf"^weekdays at {_TIME}$"), "{m} {h} * * 1-5"),
    (re.compile(rf"^weekly on (?P<day>{'|'.join(_DAYS)}) at {_TIME}$"), "{m} {h} * * {day}"),
    (re.compile(rf"^monthly on day (?P<dom>[1-9]|1\d|2[0-8]) at {_TIME}$"), "{m} {h} {dom} * *"),
]

PRESET_HELP = (
    '"every minute", "every hour", "daily at HH:MM", "weekdays at HH:MM", '
    '"weekly on <weekday> at HH:MM", "monthly on day <1-28> at HH:MM"'
)


def preset_to_cron(preset: str) -> str:
    """Map a preset to its cron expression, or raise ValueError naming the accepted forms."""
    text = " ".join(preset.lower().split())
    for pattern, template in _PRESETS:
        match = pattern.match(text)
        if match:
            groups = match.groupdict()
            values = {
                "m": int(groups["m"]) if groups.get("m") else 0,
                "h": int(groups["h"]) if groups.get("h") else 0,
                "day": _DAYS.get(groups.get("day") or "", 0),
                "dom": groups.get("dom") or "",
            }
            return template.format(**values)
    raise ValueError(f"unknown schedule preset {preset!r}; use a cron expression or one of {PRESET_HELP}")


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as 'Europe/London'") from exc


def check_cron(expression: str) -> str:
    """Return the expression if cron accepts it, else raise ValueError with cron's reason."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"cron expression {expression!r} must have 5 fields, not {len(fields)}")
    try:
        CronSim(expression, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from exc
    return expression


def next_runs(cron: str, timezone: str, *, after: datetime, count: int) -> Iterator[datetime]:
    """The next ``count`` slots strictly after ``after``, as aware datetimes in ``timezone`` (DST handled)."""
    zone = check_timezone(timezone)
    iterator = CronSim(cron, after.astimezone(zone))
    for _ in range(count):
        slot = next(iterator, None)
        if slot is None:  # cronsim stops at its last representable year
            return
        yield slot


def next_run(cron: str, timezone: str, *, after: datetime) -> datetime | None:
    """The first slot strictly after ``after`` (None if the expression never fires again)."""
    return next(next_runs(cron, timezone, after=after, count=1), None)


def is_slot(cron: str, timezone: str, when: datetime) -> bool:
    """Whether ``when`` (aware) is exactly one of the schedule's slots.

    Compared in UTC: aware datetimes in one zone compare (and subtract) by wall clock, ignoring ``fold``, so the two
    01:30s of a fall-back night would otherwise look the same.
    """
    instant = when.astimezone(UTC)
    found = next_run(cron, timezone, after=instant - timedelta(seconds=1))
    return found is not None and found.astimezone(UTC) == instant


#: Slots sampled to find a schedule's period: enough to see every gap of a day's or a week's pattern.
_PERIOD_SAMPLES = 64


@lru_cache(maxsize=256)
def schedule_period(cron: str) -> timedelta:
    """The shortest gap between two slots of ``cron``, in wall-clock time.

    Measured on naive times, so a DST change never makes a daily schedule look like a 23-hour one.
    """
    ticks = CronSim(check_cron(cron), datetime(2001, 1, 1))
    previous = next(ticks, None)
    shortest: timedelta | None = None
    for _ in range(_PERIOD_SAMPLES):
        current = next(ticks, None)
        if current is None or previous is None:
            break
        gap = current - previous
        shortest = gap if shortest is None else min(shortest, gap)
        previous = current
    return shortest or timedelta(days=365)


@dataclass(frozen=True)
class PreviewRun:
    """One upcoming slot, in the schedule's zone and in UTC. ``dst_change``: the UTC offset differs from the
    previous slot's (clocks changed in between)."""

    local: datetime
    utc: datetime
    dst_change: bool

    @property
    def zone_abbreviation(self) -> str:
        return self.local.tzname() or ""

    @property
    def utc_offset(self) -> str:
        """``+01:00``, ``-05:00``: the zone's offset from UTC at this slot."""
        minutes = int((self.local.utcoffset() or timedelta()).total_seconds() // 60)
        sign = "-" if minutes < 0 else "+"
        return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def preview_runs(cron: str, timezone: str, *, after: datetime, count: int) -> list[PreviewRun]:
    """The next ``count`` slots after ``after``, each with its UTC time and whether clocks changed before it."""
    runs: list[PreviewRun] = []
    previous_offset = after.astimezone(check_timezone(timezone)).utcoffset()
    for slot in next_runs(cron, timezone, after=after, count=count):
        offset = slot.utcoffset()
        runs.append(PreviewRun(local=slot, utc=slot.astimezone(UTC), dst_change=offset != previous_offset))
        previous_offset = offset
    return runs
