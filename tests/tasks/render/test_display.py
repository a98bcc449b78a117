"""Values written for a reader: the fast compiled styles agree with Babel's own formatting, value for value."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from babel import Locale
from babel.numbers import format_currency, parse_pattern

from bulletin.datasets import ColumnFormat
from bulletin.errors import DefinitionError
from tasks.render.display import column_texts, excel_format, format_value, generated_text, number_style

EUR = ColumnFormat(kind="currency", currency="EUR")
LOCALES = ["en-GB", "en-US", "de-DE", "fr-FR", "es-ES", "en-IN", "ja-JP", "ar-EG"]
VALUES = [Decimal("15352124.16"), Decimal("-1234.5"), 0.1 + 0.2, 7, -3, Decimal("999.995"), 2.675]


def babel_text(value: object, pattern: str, locale: Locale, places: int) -> str:
    """Babel itself, with the locale's own pattern and ``places`` decimals."""
    number = parse_pattern(pattern)
    number.frac_prec = (places, places)
    amount = Decimal(repr(value)) if isinstance(value, float) else value
    return str(number.apply(amount, locale, currency="EUR", currency_digits=False))


@pytest.mark.parametrize("locale", LOCALES)
def test_compiled_styles_print_what_babel_prints(locale):
    where = Locale.parse(locale.replace("-", "_"))
    for value in VALUES:
        assert number_style(EUR, locale).text(value) == format_currency(value, "EUR", locale=where)
        decimals = number_style(ColumnFormat(kind="decimal", decimals=3), locale).text(value)
        assert decimals == babel_text(value, where.decimal_formats[None].pattern, where, 3)
        percent = number_style(ColumnFormat(kind="percent"), locale).text(value)
        assert percent == babel_text(value, where.percent_formats[None].pattern, where, 1)


def test_de_de_groups_with_dots_and_the_symbol_follows():
    assert format_value(Decimal("15352124.16"), EUR, "de-DE") == "15.352.124,16\xa0€"
    assert format_value(Decimal("15352124.16"), None, "de-DE") == "15.352.124,16"
    assert number_style(ColumnFormat(kind="currency", currency="JPY"), "en-GB").text(1234.5) == "JP¥1,234"


def test_nothing_a_reader_can_use_is_empty():
    assert number_style(EUR).text(None) == ""
    assert number_style(EUR).text(float("nan")) == ""


def test_excel_codes_carry_the_symbol_and_the_date_order():
    assert excel_format(EUR, "en-GB") == '"€"#,##0.00'
    assert excel_format(EUR, "fr-FR") == '#,##0.00"\xa0€"'
    assert excel_format(ColumnFormat(kind="decimal", decimals=0)) == "#,##0"
    assert excel_format(ColumnFormat(kind="percent", decimals=2)) == "0.00%"
    assert excel_format(ColumnFormat(kind="date"), "en-US") == "m\\/d\\/yyyy"
    assert excel_format(ColumnFormat(kind="timestamp"), "de-DE") == "dd\\.mm\\.yyyy hh\\:mm"


def test_dates_and_times_in_the_readers_order_and_zone():
    moment = datetime(2026, 10, 31, 23, 30, tzinfo=UTC)
    assert column_texts([date(2026, 10, 25), None], ColumnFormat(kind="date"), "en-US", None) == ["10/25/2026", ""]
    texts = column_texts([moment], ColumnFormat(kind="timestamp"), "de-DE", "Europe/Berlin")
    assert texts == ["01.11.2026 00:30"]


def test_the_generation_time_in_the_readers_locale():
    moment = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    assert generated_text(moment, "UTC", "de-DE") == "02.11.2026, 07:00:00 UTC (UTC, UTC+00:00)"
    assert generated_text(moment, "UTC", None) == "2026-11-02 07:00:00 UTC (UTC, UTC+00:00)"


def test_an_unknown_locale_is_a_definition_error():
    with pytest.raises(DefinitionError, match="unknown locale 'xx-XX'"):
        format_value(1, EUR, "xx-XX")
