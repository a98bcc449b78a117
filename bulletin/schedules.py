"""Schedules people understand: presets and cron expressions, each in an IANA time zone.

Pure functions over ``cronsim`` (the cron library Prefect itself uses), so what we validate and preview is what the
Prefect scheduler will run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
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
        yield next(iterator)
