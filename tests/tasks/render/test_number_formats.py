"""Declared column formats reach the reader: the XLSX holds real number formats (cells stay numbers), the PDF
prints grouped, right-aligned numbers in the reader's locale, and the CSV stays raw. Read back with python-calamine,
openpyxl and pypdf."""

from __future__ import annotations

import csv
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pyarrow as pa
import pytest
from pypdf import PdfReader
from python_calamine import CalamineWorkbook

from bulletin.datasets import ColumnFormat
from tasks.render import RenderContext, open_writer

SCHEMA = pa.schema(
    [
        ("region", pa.string()),
        ("day", pa.date32()),
        ("qty", pa.int64()),
        ("amount", pa.decimal128(12, 2)),
        ("share", pa.float64()),
        ("raw", pa.float64()),
    ]
)
FORMATS = {
    "day": ColumnFormat(kind="date"),
    "qty": ColumnFormat(kind="integer"),
    "amount": ColumnFormat(kind="currency", currency="EUR"),
    "share": ColumnFormat(kind="percent"),
}
AMOUNTS = [Decimal("15352124.16"), Decimal("-1234.50"), Decimal("0.00")]


def make_ctx(**changes: object) -> RenderContext:
    base: dict[str, object] = {
        "report_id": "weekly-sales",
        "title": "Weekly sales",
        "description": "Sales by region",
        "recipient": "Ana Lima <ana@example.com>",
        "scope": "region = 'EMEA'",
        "generated_at": datetime(2026, 11, 2, 7, 0, tzinfo=ZoneInfo("Europe/London")),
        "timezone": "Europe/London",
        "column_formats": FORMATS,
    }
    base.update(changes)
    return RenderContext(**base)  # type: ignore[arg-type]


def batch() -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array(["EMEA", "EMEA", None]),
            pa.array([date(2026, 10, 25), date(2026, 10, 31), None], pa.date32()),
            pa.array([1234567, -3, None], pa.int64()),
            pa.array(AMOUNTS, pa.decimal128(12, 2)),
            pa.array([0.1534, 0.5, None]),
            pa.array([1234.5, 2.0, None]),
        ],
        schema=SCHEMA,
    )


def render(fmt: str, path: Path, ctx: RenderContext) -> Path:
    writer = open_writer(fmt, path, SCHEMA, ctx)
    writer.write_batch(batch())
    writer.close()
    return path


def pdf_text(path: Path) -> str:
    """Page 1's text, a no-break space read as a space (pypdf reads either, by font)."""
    return PdfReader(path).pages[0].extract_text().replace("\xa0", " ")


def test_xlsx_money_cells_are_numbers_with_a_currency_format(tmp_path):
    path = render("xlsx", tmp_path / "r.xlsx", make_ctx())
    sheet = openpyxl.load_workbook(path)["Data"]
    assert sheet["D2"].value == pytest.approx(15352124.16)
    assert sheet["D2"].number_format == '"€"#,##0.00'
    assert sheet["C2"].number_format == "#,##0"
    assert sheet["E2"].number_format == "0.0%"
    assert sheet["B2"].number_format == "dd\\/mm\\/yyyy"
    assert sheet["B2"].value == datetime(2026, 10, 25)
    assert sheet["F2"].number_format == "General"  # undeclared: as before
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("Data").to_python()
    assert rows[1][3] == pytest.approx(15352124.16)
    assert rows[1][2] == 1234567
    assert rows[1][4] == pytest.approx(0.1534)


def test_xlsx_formats_follow_the_readers_locale(tmp_path):
    path = render("xlsx", tmp_path / "r.xlsx", make_ctx(locale="de-DE"))
    sheet = openpyxl.load_workbook(path)["Data"]
    assert sheet["D2"].number_format == '#,##0.00"\xa0€"'  # the symbol after the number, as German writes it
    assert sheet["B2"].number_format == "dd\\.mm\\.yyyy"
    assert sheet["D2"].value == pytest.approx(15352124.16)


def test_xlsx_with_a_chart_has_the_same_formats(tmp_path):
    from tasks.render import ChartData

    chart = ChartData("Amount by region", "Region", "Amount", ["EMEA", "APAC"], [3.0, 1.0])
    path = render("xlsx", tmp_path / "r.xlsx", make_ctx(chart=chart))
    assert openpyxl.load_workbook(path)["Data"]["D3"].number_format == '"€"#,##0.00'


def test_pdf_prints_grouped_numbers_in_the_readers_locale(tmp_path):
    text = pdf_text(render("pdf", tmp_path / "r.pdf", make_ctx(locale="de-DE")))
    assert "15.352.124,16 €" in text
    assert "-1.234,50 €" in text
    assert "1.234.567" in text
    assert "15,3 %" in text
    assert "25.10.2026" in text
    assert "1234.5" in text  # undeclared: as before


def test_pdf_without_a_locale_uses_british_english(tmp_path):
    text = pdf_text(render("pdf", tmp_path / "r.pdf", make_ctx()))
    assert "€15,352,124.16" in text
    assert "25/10/2026" in text
    assert "15.3%" in text


def test_csv_stays_raw_and_machine_readable(tmp_path):
    path = render("csv", tmp_path / "r.csv", make_ctx(locale="de-DE"))
    rows = list(csv.reader(path.open(encoding="utf-8")))
    assert rows[1][1:5] == ["2026-10-25", "1234567", "15352124.16", "0.1534"]


def test_xlsx_totals_row_is_a_subtotal_formula_with_its_value_cached(tmp_path):
    path = render("xlsx", tmp_path / "r.xlsx", make_ctx(totals=("qty", "amount", "raw")))
    sheet = openpyxl.load_workbook(path)["Data"]
    assert sheet["A5"].value == "Total"
    assert sheet["D5"].value == "=SUBTOTAL(109,D2:D4)"
    assert sheet["D5"].number_format == '"€"#,##0.00' and sheet["D5"].font.b
    assert sheet["E5"].value is None, "not asked for"
    assert sheet.auto_filter.ref == "A1:F4", "the total stays out of the filter: sorting leaves it last"
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("Data").to_python()
    assert rows[4][2] == 1234564
    assert rows[4][3] == pytest.approx(float(sum(AMOUNTS)))
    assert rows[4][5] == pytest.approx(1236.5)


def test_pdf_totals_row_in_the_readers_locale(tmp_path):
    text = pdf_text(render("pdf", tmp_path / "r.pdf", make_ctx(locale="de-DE", totals=("qty", "amount"))))
    assert "Total" in text
    assert "15.350.889,66 €" in text  # 15,352,124.16 - 1,234.50
    assert "1.234.564" in text


def test_no_totals_row_unless_asked_for(tmp_path):
    assert openpyxl.load_workbook(render("xlsx", tmp_path / "r.xlsx", make_ctx()))["Data"].max_row == 4
    assert "Total" not in pdf_text(render("pdf", tmp_path / "r.pdf", make_ctx()))


def test_declared_timestamps_show_in_the_readers_zone(tmp_path):
    schema = pa.schema([("at", pa.timestamp("us", tz="UTC")), ("left", pa.timestamp("us", tz="UTC"))])
    moment = datetime(2026, 10, 31, 23, 30, tzinfo=ZoneInfo("UTC"))
    rows = pa.record_batch([pa.array([moment], schema[0].type), pa.array([moment], schema[1].type)], schema=schema)
    ctx = make_ctx(column_formats={"at": ColumnFormat(kind="timestamp")}, timezone="Europe/Berlin", locale="de-DE")
    for fmt in ("xlsx", "pdf"):
        writer = open_writer(fmt, tmp_path / f"t.{fmt}", schema, ctx)
        writer.write_batch(rows)
        writer.close()
    sheet = openpyxl.load_workbook(tmp_path / "t.xlsx")["Data"]
    assert sheet["A2"].value == datetime(2026, 11, 1, 0, 30), "Berlin's wall-clock time"
    assert sheet["A2"].number_format == "dd\\.mm\\.yyyy hh\\:mm"
    assert sheet["B2"].value == datetime(2026, 10, 31, 23, 30), "undeclared: its own zone, as before"
    assert "01.11.2026 00:30" in pdf_text(tmp_path / "t.pdf")
