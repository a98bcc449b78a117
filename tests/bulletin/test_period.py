"""The period a run covers (bulletin/period.py): declared or read from the report's filters, and written for the
reader by Babel. Pure: no services."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from bulletin.errors import DefinitionError
from bulletin.models import Filter
from bulletin.period import Period, filters_period, period_label, report_period
from bulletin.reports import ReportDefinition, get_report, load_report_file, resolve_parameters

REPORTS = Path(__file__).resolve().parents[2] / "deployments" / "reports"
AS_OF = {"as_of": date(2026, 10, 31)}


def between(*filters: tuple[str, str, Any]) -> Period | None:
    return filters_period([Filter(field=f, op=op, value=v) for f, op, v in filters], AS_OF)  # type: ignore[arg-type]


def report_with(**changes: Any) -> ReportDefinition:
    base = get_report(REPORTS, "weekly-regional-sales").model_dump(by_alias=True, exclude_none=True)
    base.update(changes)
    return ReportDefinition.model_validate(base)


@pytest.mark.parametrize("report_id", ["weekly-regional-sales", "account-orders-digest", "daily-account-orders"])
def test_the_demo_reports_state_their_period(report_id: str) -> None:
    report = get_report(REPORTS, report_id)
    period = report_period(report, resolve_parameters(report, {"as_of": "2026-10-31"}, date(2026, 12, 6)))
    expected = "31 Oct 2026" if report_id == "daily-account-orders" else "25 – 31 Oct 2026"
    assert period is not None and period_label(period) == expected


def test_a_declared_period_wins_over_the_filters() -> None:
    report = report_with(period={"from": "{{ params.as_of - 27d }}", "to": "2026-10-31"})
    assert report_period(report, AS_OF) == Period(date(2026, 10, 4), date(2026, 10, 31))


def test_the_filters_give_the_period_with_exclusive_bounds_taken_in() -> None:
    assert between(("d", ">", "{{ params.as_of - 7d }}"), ("d", "<", "{{ params.as_of + 1d }}")) == Period(
        date(2026, 10, 25), date(2026, 10, 31)
    )
    assert between(("d", "=", "{{ params.as_of }}")) == Period(date(2026, 10, 31), date(2026, 10, 31))


@pytest.mark.parametrize(
    "filters",
    [
        [("d", ">=", "{{ params.as_of - 6d }}")],  # one side only
        [("a", ">=", "{{ params.as_of }}"), ("a", "<=", "{{ params.as_of }}"), ("b", "=", "{{ params.as_of }}")],
        [("region", "=", "EMEA"), ("qty", ">=", 3)],  # no dates
        [("d", ">=", "{{ params.as_of }}"), ("d", "<", "{{ params.as_of }}")],  # empty
    ],
)
def test_no_period_is_made_up_when_the_filters_do_not_pin_one_column(filters: list[tuple[str, str, Any]]) -> None:
    assert between(*filters) is None


@pytest.mark.parametrize(
    ("start", "end", "locale", "label"),
    [
        (date(2026, 10, 25), date(2026, 10, 31), "en-GB", "25 – 31 Oct 2026"),
        (date(2026, 10, 28), date(2026, 11, 3), "en-GB", "28 Oct – 3 Nov 2026"),
        (date(2026, 12, 28), date(2027, 1, 3), "en-GB", "28 Dec 2026 – 3 Jan 2027"),
        (date(2026, 10, 25), date(2026, 10, 31), "en-US", "Oct 25 – 31, 2026"),
        (date(2026, 10, 25), date(2026, 10, 31), "de_DE", "25.–31. Okt. 2026"),
        (date(2026, 10, 31), date(2026, 10, 31), "fr-FR", "31 oct. 2026"),
    ],
)
def test_the_label_is_written_for_the_readers_locale(start: date, end: date, locale: str, label: str) -> None:
    assert period_label(Period(start, end), locale) == label


def test_bad_periods_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="unknown locale 'xx-QQ'"):
        period_label(Period(date(2026, 1, 1), date(2026, 1, 2)), "xx-QQ")
    with pytest.raises(DefinitionError, match=r"ends .* before it starts"):
        Period(date(2026, 1, 2), date(2026, 1, 1))
    text = (REPORTS / "weekly-regional-sales.yaml").read_text()
    declared = 'period: {from: "{{ params.as_of - 6d }}", to: "{{ params.as_of }}"}'
    assert declared in text
    for bad, reason in [
        ('period: {from: "{{ recipient.region }}", to: "{{ params.as_of }}"}', "must name a date parameter"),
        ('period: {from: "last week", to: "{{ params.as_of }}"}', "neither a date"),
    ]:
        path = tmp_path / "weekly-regional-sales.yaml"
        path.write_text(text.replace(declared, bad))
        with pytest.raises(DefinitionError, match=f"period.*{reason}"):
            load_report_file(path)


def test_a_file_with_no_rows_says_so_naming_the_scope_and_the_period() -> None:
    from bulletin.models import no_rows_sentence

    region = [[Filter(field="region", op="=", value="EMEA-North")]]
    assert no_rows_sentence("Sales lines", region, "25 – 31 Oct 2026") == (
        "No sales lines for EMEA-North (25 – 31 Oct 2026)."
    )
    either = [[Filter(field="region", op="is_one_of", value=["EU", "UK"]), Filter(field="team", op="=", value="N")]]
    assert no_rows_sentence("Orders", either, None) == "No orders for EU or UK, N."
    ranged = [[Filter(field="amount", op=">", value=5)], [Filter(field="region", op="=", value="EU")]]
    assert no_rows_sentence("Orders", ranged, None) == "No orders for (amount > 5) OR (region = 'EU')."
    assert no_rows_sentence("Orders", [], "31 Oct 2026") == "No orders (31 Oct 2026)."
