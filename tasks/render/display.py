"""How a reader sees a value: money, counts, decimals, percents and dates written for their locale.

A dataset declares a column's format (:class:`bulletin.datasets.ColumnFormat`); the reader's locale (a recipient's
``locale`` attribute, else British English) gives the separators, the currency symbol and its place, and the order
of a date's parts, from the CLDR data through Babel. One rule, two forms:

- :func:`excel_format`: the XLSX cell's number format code. The cell stays a number or a date; Excel shows the
  separators of the machine it runs on, so the code carries only what the locale places (symbol, date order).
- :func:`number_style` and :func:`column_texts`: the text the PDF and the email print.

Why not Babel for every value: ``format_currency`` takes about 15 us a value, and a PDF page shows a few hundred
numbers. Each (format, locale) is compiled once into a :class:`NumberStyle` (prefix, suffix, separators) that
Python's own ``format`` fills in about 1 us, and checked at once against Babel on a few probe values: a locale
where they differ (grouping not in threes, as en-IN's ``1,53,52,124``) is formatted by Babel itself.
CSV never comes here: it stays raw and machine-readable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.numbers import (
    get_currency_precision,
    get_currency_symbol,
    get_decimal_symbol,
    get_group_symbol,
    get_minus_sign_symbol,
    parse_pattern,
)

from bulletin.datasets import ColumnFormat
from bulletin.period import DEFAULT_LOCALE, reader_locale
from tasks.render.sanitize import Kind, generated_label

__all__ = [
    "DEFAULT_LOCALE",
    "NumberStyle",
    "column_texts",
    "date_pattern",
    "excel_format",
    "excel_formats",
    "format_value",
    "generated_text",
    "number_style",
    "suits",
]

_PROBES = (Decimal("15352124.165"), Decimal("-1234.5"), Decimal("0.5"), 7, Decimal("-0.153"))
_DATE_TOKEN_RE = re.compile(r"y+|M+|d+|H+|h+|m+|s+|a+|'[^']*'|.")
_EXCEL_DATE = {"M": "m", "MM": "mm", "d": "d", "dd": "dd", "H": "h", "HH": "hh", "h": "h", "hh": "hh"}
_EXCEL_DATE |= {"m": "mm", "mm": "mm", "s": "ss", "ss": "ss", "a": "AM/PM"}


@dataclass(frozen=True)
class NumberStyle:
    """One format in one locale, ready to print values: about 1 us each (see the module's docstring)."""

    positive: tuple[str, str]  # prefix, suffix
    negative: tuple[str, str]
    spec: str  # Python's format spec, with "," and "." for the separators: ",.2f"
    table: dict[int, str]  # "," and "." to the locale's group and decimal symbols
    scale: int = 1  # 100 for a percent
    babel: Callable[[Any], str] | None = None  # set when the locale needs Babel for each value

    def text(self, value: Any) -> str:
        """``value`` for the reader; "" for None, NaN and infinities (nothing a reader can use)."""
        if value is None:
            return ""
        if isinstance(value, float):
            if not math.isfinite(value):
                return ""
            value = Decimal(repr(value))  # round half-even on the shortest decimal, as Babel does
        if self.babel is not None:
            return self.babel(value)
        digits = format(abs(value) * self.scale if self.scale != 1 else abs(value), self.spec).translate(self.table)
        prefix, suffix = self.negative if value < 0 else self.positive
        return f"{prefix}{digits}{suffix}"


def decimals_of(fmt: ColumnFormat) -> int:
    """Digits after the point: declared, else the currency's own (EUR 2, JPY 0), 1 for a percent, 2 for a decimal."""
    if fmt.decimals is not None:
        return fmt.decimals
    if fmt.kind == "currency" and fmt.currency:
        return int(get_currency_precision(fmt.currency))
    return {"integer": 0, "percent": 1}.get(fmt.kind, 2)


@lru_cache(maxsize=256)
def number_style(fmt: ColumnFormat, locale: str = DEFAULT_LOCALE) -> NumberStyle:
    """The compiled style of a number ``fmt`` in ``locale`` (a BCP 47 tag; an unknown one is a DefinitionError)."""
    where = reader_locale(locale)
    source = {"currency": where.currency_formats["standard"], "percent": where.percent_formats[None]}.get(
        fmt.kind, where.decimal_formats[None]
    )
    pattern = parse_pattern(source.pattern)  # a fresh copy: its precision is set below
    places = decimals_of(fmt)
    pattern.frac_prec = (places, places)
    symbol = get_currency_symbol(fmt.currency, where) if fmt.currency else ""
    minus, percent = get_minus_sign_symbol(where), where.number_symbols["latn"].get("percentSign", "%")

    def symbols(text: str) -> str:
        return text.replace("¤", symbol).replace("%", percent).replace("-", minus)

    style = NumberStyle(
        positive=(symbols(pattern.prefix[0]), symbols(pattern.suffix[0])),
        negative=(symbols(pattern.prefix[1]), symbols(pattern.suffix[1])),
        spec=f",.{places}f",
        table=str.maketrans({",": get_group_symbol(where), ".": get_decimal_symbol(where)}),
        scale=100 if fmt.kind == "percent" else 1,
    )

    def by_babel(value: Any) -> str:
        return str(pattern.apply(value, where, currency=fmt.currency, currency_digits=False))

    if pattern.grouping != (3, 3) or any(style.text(p) != by_babel(p) for p in _PROBES):
        style = replace(style, babel=by_babel)
    return style


def format_value(value: Any, fmt: ColumnFormat | None, locale: str | None) -> str:
    """One value as the reader sees it (a key figure, a total); without a format, grouped with two decimals."""
    if fmt is None or not fmt.is_number:
        fmt = ColumnFormat(kind="decimal")
    return number_style(fmt, locale or DEFAULT_LOCALE).text(value)


@lru_cache(maxsize=64)
def date_pattern(locale: str, with_time: bool = False) -> str:
    """The locale's short numeric date with the year in full (``dd/MM/y``, ``dd.MM.y``, ``M/d/y``), and its short
    time when ``with_time``: numeric, so the XLSX shows it the same whatever the language of the spreadsheet."""
    where = reader_locale(locale)
    pattern = re.sub(r"y+", "y", where.date_formats["short"].pattern)
    return f"{pattern} {where.time_formats['short'].pattern}" if with_time else pattern


@lru_cache(maxsize=256)
def excel_format(fmt: ColumnFormat, locale: str = DEFAULT_LOCALE) -> str:
    """The XLSX number format code: ``"€"#,##0.00``, ``#,##0.00" €"``, ``#,##0``, ``0.0%``, ``dd/mm/yyyy``."""
    if fmt.kind in ("date", "timestamp"):
        return _excel_date(date_pattern(locale, fmt.kind == "timestamp"))
    places = decimals_of(fmt)
    digits = "#,##0" + ("." + "0" * places if places else "")
    if fmt.kind == "percent":
        return ("0." + "0" * places if places else "0") + "%"
    if fmt.kind != "currency" or not fmt.currency:
        return digits
    where = reader_locale(locale)
    pattern = where.currency_formats["standard"]
    symbol = get_currency_symbol(fmt.currency, where).replace('"', "")
    prefix, suffix = (_quoted(part.replace("¤", symbol)) for part in (pattern.prefix[0], pattern.suffix[0]))
    return f"{prefix}{digits}{suffix}"


def suits(fmt: ColumnFormat | None, kind: Kind) -> bool:
    """Whether a declared format applies to values of ``kind``: a number format to numbers, a date one to dates
    (a dataset without column types may declare a format its values then do not have: they show as they are)."""
    return fmt is not None and (kind in ("number", "float") if fmt.is_number else kind in ("date", "datetime"))


def excel_formats(
    names: Sequence[str], kinds: Sequence[Kind], formats: Mapping[str, ColumnFormat], locale: str | None
) -> list[str | None]:
    """Per column, the XLSX number format code of its declared format in ``locale``, where it suits the column's
    values; else None (the kind's own)."""
    codes: list[str | None] = []
    for name, kind in zip(names, kinds, strict=True):
        fmt = formats.get(name)
        codes.append(excel_format(fmt, locale or DEFAULT_LOCALE) if fmt is not None and suits(fmt, kind) else None)
    return codes


def _quoted(text: str) -> str:
    return f'"{text}"' if text else ""


def _excel_date(pattern: str) -> str:
    parts = []
    for token in _DATE_TOKEN_RE.findall(pattern):
        if token[0] == "y":
            parts.append("yyyy")
        elif token in _EXCEL_DATE:
            parts.append(_EXCEL_DATE[token])
        else:
            literal = token.strip("'") if token.startswith("'") else token
            parts.append("".join(c if c == " " else f"\\{c}" for c in literal))
    return "".join(parts)


def column_texts(values: Sequence[Any], fmt: ColumnFormat, locale: str | None, timezone: str | None) -> list[str]:
    """A column's values as the reader sees them: numbers by :func:`number_style`, dates and times by the
    locale's short numeric pattern, zone-aware times in the reader's ``timezone``. "" for nulls."""
    where = locale or DEFAULT_LOCALE
    if fmt.is_number:
        style = number_style(fmt, where)
        return [style.text(v) for v in values]
    pattern = date_pattern(where, fmt.kind == "timestamp")
    return [_moment_text(v, pattern, where, timezone) for v in values]


@lru_cache(maxsize=8_192)
def _moment_text(value: Any, pattern: str, locale: str, timezone: str | None) -> str:
    """Dates repeat down a report's column: each distinct one is written by Babel once."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        if value.tzinfo is not None and timezone:
            value = value.astimezone(ZoneInfo(timezone))
        return str(format_datetime(value, pattern, locale=reader_locale(locale)))
    if isinstance(value, date):
        return str(format_date(value, pattern.split(" ")[0], locale=reader_locale(locale)))
    return str(value)


def generated_text(generated_at: datetime, timezone: str, locale: str | None) -> str:
    """When a report was made, for a reader with ``locale``: their medium date and time, the zone abbreviation,
    the IANA name and the offset (the abbreviation alone is ambiguous, the offset alone hides daylight saving).
    Without a locale, :func:`~tasks.render.sanitize.generated_label`'s ISO form, as before locales existed."""
    if locale is None:
        return generated_label(generated_at, timezone)
    offset = generated_at.strftime("%z")
    offset = f"UTC{offset[:3]}:{offset[3:5]}" if offset else "UTC offset unknown"
    when = format_datetime(generated_at, "medium", locale=reader_locale(locale)).replace("\u202f", " ")
    zone = generated_at.tzname()
    return f"{when}{f' {zone}' if zone else ''} ({timezone}, {offset})"
