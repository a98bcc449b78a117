"""The chart, shaped once to answer a question (tasks/render/chart.py) and drawn by each format: pure shaping, then
the PDF read back with pypdf, the XLSX with openpyxl and python-calamine, the email's PNG with Pillow."""

from __future__ import annotations

import io
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pyarrow as pa
import pypdf
import pytest
from PIL import Image
from python_calamine import CalamineWorkbook

from tasks.email.chart_png import render_chart_png
from tasks.render import ChartData, RenderContext, open_writer
from tasks.render.chart import chart_points, human_number, shape_chart

PRODUCTS = [(f"Product {i:02d} with a long name", 1000.0 * (i + 1)) for i in range(40)]  # category order


def shaped(rows: list[tuple[object, object]], agg: str = "sum", top: int = 10) -> ChartData:
    return shape_chart(rows, top=top, agg=agg, title="Revenue", category_label="Product", value_label="Amount")


def test_bars_are_sorted_by_value_the_top_n_and_one_other_bar_for_the_rest() -> None:
    chart = shaped(PRODUCTS)
    assert chart.categories[:3] == [f"Product {i:02d} with a long name" for i in (39, 38, 37)]
    assert chart.values[:10] == sorted(chart.values[:10], reverse=True) and chart.categories[-1] == "Other (30)"
    assert chart.values[-1] == sum(v for _, v in PRODUCTS[:30]) and chart.total == sum(v for _, v in PRODUCTS)
    assert len(chart.categories) == 11 and not chart.time


def test_an_average_is_not_added_up_into_other_and_one_left_over_is_simply_shown() -> None:
    chart = shaped(PRODUCTS, agg="avg")
    assert len(chart.categories) == 10 and chart.omitted == 30 and chart.total is None
    assert "Other" not in " ".join(chart.categories)
    assert len(shaped(PRODUCTS[:11]).categories) == 11 and shaped(PRODUCTS[:11]).omitted == 0, "no 'Other (1)'"


def test_a_time_category_is_a_line_in_time_order() -> None:
    days = [(date(2026, 10, d), float(100 - d)) for d in range(25, 32)]
    chart = shaped(days)
    assert chart.time and chart.categories == [f"2026-10-{d}" for d in range(25, 32)]
    assert chart.values == [float(100 - d) for d in range(25, 32)], "time order, not value order"
    stamped = shaped([(datetime(2026, 10, 25, 9, 30), 1.0), (datetime(2026, 10, 25, 10, 0), 2.0)])
    assert stamped.time and stamped.categories[0] == "2026-10-25 09:30"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3_600_000, "3.6M"),
        (250_000, "250k"),
        (1_234, "1.2k"),
        (999_999, "1M"),
        (950, "950"),
        (0.25, "0.25"),
        (-1_500_000, "-1.5M"),
        (0, "0"),
        (12_000_000_000, "12B"),
        (100_000, "100k"),
    ],
)
def test_values_are_in_human_units(value: float, text: str) -> None:
    assert human_number(value) == text


def test_many_or_long_labels_lie_down_and_few_short_ones_stand() -> None:
    assert chart_points(shaped(PRODUCTS)).horizontal
    assert not chart_points(shaped([("EU", 3.0), ("UK", 2.0)])).horizontal
    assert not chart_points(shaped([(date(2026, 1, d), 1.0) for d in range(1, 29)])).horizontal


def ctx(chart: ChartData | None) -> RenderContext:
    return RenderContext(
        report_id="weekly",
        title="Weekly regional sales",
        description="",
        recipient="Ana",
        scope="region = 'EU'",
        generated_at=datetime(2026, 11, 2, 7, 0, tzinfo=ZoneInfo("Europe/London")),
        timezone="Europe/London",
        chart=chart,
    )


def render(path: Path, fmt: str, context: RenderContext) -> Path:
    schema = pa.schema([("product", pa.string()), ("amount", pa.float64())])
    writer = open_writer(fmt, path, schema, context)
    writer.write_batch(pa.record_batch([pa.array(["a"]), pa.array([1.0])], schema))
    writer.close()
    return path


def test_the_pdf_draws_the_sorted_bars_with_their_values_in_human_units(tmp_path: Path) -> None:
    text = pypdf.PdfReader(render(tmp_path / "c.pdf", "pdf", ctx(shaped(PRODUCTS)))).pages[0].extract_text()
    assert "Other (30)" in text and "40k" in text and "465k" in text, "labels and values on the bars"
    assert "Product 39" in text and "Product 29" not in text, "the ten largest, the rest in Other"


def test_the_xlsx_chart_plots_the_same_sorted_bars_natively(tmp_path: Path) -> None:
    path = render(tmp_path / "c.xlsx", "xlsx", ctx(shaped(PRODUCTS)))
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("Summary").to_python()
    start = next(i for i, row in enumerate(rows) if row[0] == "Product")
    table = [(row[0], row[1]) for row in rows[start + 1 : start + 12]]
    assert table[0][0].startswith("Product 39") and table[-1] == ("Other (30)", 465000.0)
    assert [v for _, v in table[:-1]] == sorted((v for _, v in table[:-1]), reverse=True)
    (chart,) = openpyxl.load_workbook(path)["Summary"]._charts
    assert chart.tagname == "barChart" and chart.type == "bar", "bars lying down: 11 long labels"
    with openpyxl.reader.excel.ZipFile(path) as book:
        xml = book.read("xl/charts/chart1.xml").decode()
    assert '<c:numFmt formatCode="[&gt;=999500]0.0,,&quot;M&quot;' in xml, "human units on the axis and the bars"
    assert '<c:ptCount val="11"/>' in xml, "at most top + 1 bars"


def test_the_email_png_is_sharp_and_tall_enough_for_its_labels() -> None:
    image = Image.open(io.BytesIO(render_chart_png(shaped(PRODUCTS))))
    assert image.size[0] == 1200 and image.size[1] >= 2 * 11 * 26, "2x, and a row per bar"
