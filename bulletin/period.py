"""The period a report's run covers, and how a reader sees it: ``25 – 31 Oct 2026``.

A report says which days its data covers in ``period`` (``{from: "{{ params.as_of - 6d }}", to: "{{ params.as_of }}"}``,
both days included). Without it, the period is read from the report's own filters when they bound one date column
from both sides with parameters (``order_date >= {{ params.as_of - 6d }}`` and ``order_date <= {{ params.as_of }}``)
or fix it to one day (``order_date = {{ params.as_of }}``). A report with neither covers no stated period, and its
files say nothing about one. Never the recipient's secure filters: the period is the same for every recipient.

The label is written by Babel from the CLDR data, in the reader's locale (default British English), so a range
inside one month is not repeated (``25 – 31 Oct 2026``) and one across years is spelled out in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_interval, format_skeleton

from bulletin.errors import DefinitionError
from bulletin.models import Filter
from bulletin.reports import ReportDefinition
from bulletin.templating import TemplateError, render_value

DEFAULT_LOCALE = "en-GB"
#: The CLDR skeleton of the label: year, abbreviated month, day ("25 Oct 2026", "Oct 25, 2026", "25.10.2026"...).
_SKELETON = "yMMMd"


@dataclass(frozen=True)
class Period:
    """The first and the last day a run covers, both included."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise DefinitionError(f"the period ends ({self.end}) before it starts ({self.start})", field="period")


def explicit_period(start: object, end: object, params: dict[str, Any]) -> Period:
    """The period a report declares, its two values resolved against the run's parameters."""
    try:
        first, last = render_value(start, {"params": params}), render_value(end, {"params": params})
    except TemplateError as exc:
        raise DefinitionError(str(exc), field="period") from exc
    if isinstance(first, str):
        first = _iso_date(first)
    if isinstance(last, str):
        last = _iso_date(last)
    if not isinstance(first, date) or not isinstance(last, date):
        raise DefinitionError("period: 'from' and 'to' must be dates or date parameters", field="period")
    return Period(first, last)


def filters_period(filters: list[Filter], params: dict[str, Any]) -> Period | None:
    """The period the report's own filters pin down on one date column, or None when they pin none (or several)."""
    bounds: dict[str, dict[str, date]] = {}
    for flt in filters:
        try:
            value = render_value(flt.value, {"params": params})
        except TemplateError:
            return None
        if not isinstance(value, date):
            continue
        side = bounds.setdefault(flt.field, {})
        if flt.op in ("=", ">=", ">"):
            side["start"] = value + timedelta(days=1) if flt.op == ">" else value
        if flt.op in ("=", "<=", "<"):
            side["end"] = value - timedelta(days=1) if flt.op == "<" else value
    found = [b for b in bounds.values() if "start" in b and "end" in b and b["start"] <= b["end"]]
    return Period(found[0]["start"], found[0]["end"]) if len(found) == 1 else None


@lru_cache(maxsize=64)
def period_label(period: Period, locale: str = DEFAULT_LOCALE) -> str:
    """``25 – 31 Oct 2026`` (en-GB), ``Oct 25 – 31, 2026`` (en-US), ``25.–31. Okt. 2026`` (de-DE); one day alone is
    ``31 Oct 2026``. ``locale`` is a BCP 47 tag (``en-GB``) or a POSIX one (``en_GB``). Cached: a run's period is
    the same for every recipient, and Babel takes tens of microseconds per label."""
    where = reader_locale(locale)
    if period.start == period.end:
        label = format_skeleton(_SKELETON, period.start, locale=where)
    else:
        label = format_interval(period.start, period.end, _SKELETON, locale=where)
    # CLDR puts thin spaces around the dash; a plain space reads the same and every font and mail client has it.
    return label.replace("\u2009", " ")


def reader_locale(tag: str) -> Locale:
    """Babel's locale for a BCP 47 or POSIX tag; a tag CLDR does not know is a DefinitionError naming it."""
    try:
        return Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError) as exc:
        raise DefinitionError(f"unknown locale {tag!r}: use a tag such as 'en-GB' or 'de-DE'", field="locale") from exc


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise DefinitionError(f"period: {text!r} is not a date (YYYY-MM-DD)", field="period") from exc


def report_period(report: ReportDefinition, params: dict[str, Any]) -> Period | None:
    """The period a run of ``report`` with ``params`` covers: declared, else read from its filters, else None."""
    if report.period is not None:
        return explicit_period(report.period.from_, report.period.to, params)
    return filters_period(report.filters, params)
