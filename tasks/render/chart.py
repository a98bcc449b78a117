"""The report's chart, drawn natively in each format: an Excel column chart and a ReportLab bar chart.

``chart_points`` is the pure part: it pairs categories with values, caps their number so labels stay legible, and
turns values a chart cannot plot (NaN, infinities) into gaps. Both renderers draw from its result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bulletin.errors import DefinitionError
from tasks.render.base import ChartData
from tasks.render.sanitize import plain_line, sanitize_xlsx_text

if TYPE_CHECKING:
    from reportlab.pdfgen.canvas import Canvas

#: More bars than this make unreadable labels; the rest are counted in ``omitted`` and said so.
MAX_CATEGORIES = 50
#: Category labels longer than this are cut (with an ellipsis) under the bars.
MAX_LABEL_CHARS = 24
_BAR_COLOUR = "#4472C4"  # Excel's default first series colour, so both formats look alike


@dataclass(frozen=True)
class ChartPoints:
    title: str
    category_label: str
    value_label: str
    categories: list[str]
    values: list[float | None]
    omitted: int  # categories beyond MAX_CATEGORIES, not drawn


def chart_points(chart: ChartData, limit: int = MAX_CATEGORIES) -> ChartPoints:
    """Validate and cap a chart's series. Raises ``DefinitionError`` when categories and values differ in length."""
    if len(chart.categories) != len(chart.values):
        raise DefinitionError(
            f"chart has {len(chart.categories)} categories but {len(chart.values)} values", field="chart"
        )
    values = [v if isinstance(v, int | float) and math.isfinite(v) else None for v in chart.values[:limit]]
    return ChartPoints(
        title=chart.title,
        category_label=chart.category_label,
        value_label=chart.value_label,
        categories=[str(c) for c in chart.categories[:limit]],
        values=values,
        omitted=max(0, len(chart.categories) - limit),
    )


def short_label(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    text = plain_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def add_xlsx_chart(workbook: Any, sheet: Any, points: ChartPoints, first_row: int, anchor: str) -> int:
    """Write the series as a two-column table at ``first_row`` of ``sheet`` and a column chart that plots it.

    XlsxWriter objects are typed ``Any`` because the library ships no type information. Every text is sanitised:
    XlsxWriter reads a chart title or series name that starts with ``=`` as a cell reference. Returns the row after
    the table.
    """
    bold = workbook.add_format({"bold": True})
    sheet.write_string(first_row, 0, sanitize_xlsx_text(points.category_label), bold)
    sheet.write_string(first_row, 1, sanitize_xlsx_text(points.value_label), bold)
    for i, (category, value) in enumerate(zip(points.categories, points.values, strict=True)):
        sheet.write_string(first_row + 1 + i, 0, sanitize_xlsx_text(category))
        if value is None:
            sheet.write_blank(first_row + 1 + i, 1, None)
        else:
            sheet.write_number(first_row + 1 + i, 1, value)
    last_row = first_row + len(points.categories)
    if points.omitted:
        note = f"{points.omitted} more categories are not shown in the chart."
        sheet.write_string(last_row + 1, 0, note)
        last_row += 1
    if not points.categories:
        return last_row + 1
    chart = workbook.add_chart({"type": "column"})
    name = sheet.get_name()
    chart.add_series(
        {
            "name": sanitize_xlsx_text(points.value_label),
            "categories": [name, first_row + 1, 0, first_row + len(points.categories), 0],
            "values": [name, first_row + 1, 1, first_row + len(points.categories), 1],
        }
    )
    chart.set_title({"name": sanitize_xlsx_text(points.title)})
    chart.set_x_axis({"name": sanitize_xlsx_text(points.category_label)})
    chart.set_y_axis({"name": sanitize_xlsx_text(points.value_label)})
    chart.set_legend({"none": True})
    chart.set_size({"width": 720, "height": 360})
    sheet.insert_chart(anchor, chart)
    return last_row + 1


def draw_pdf_chart(
    canvas: Canvas, points: ChartPoints, x: float, y: float, width: float, height: float, font: str
) -> None:
    """Draw a bar chart with its title in the box whose lower-left corner is (x, y).

    ReportLab graphics draw labels with plain ``drawString``, which parses no markup; line breaks are still
    flattened so a label stays on its line. ReportLab's graphics are imported here, not with the module: a worker
    process that renders no chart (most XLSX and CSV runs) never loads them.
    """
    from reportlab.graphics import renderPDF
    from reportlab.graphics.charts.barcharts import VerticalBarChart
    from reportlab.graphics.shapes import Drawing, String
    from reportlab.lib.colors import HexColor
    from reportlab.pdfbase.pdfmetrics import stringWidth

    drawing = Drawing(width, height)
    title = short_label(points.title, 120)
    drawing.add(String(width / 2, height - 12, title, fontName=font, fontSize=10, textAnchor="middle"))
    if points.categories:
        bars = VerticalBarChart()
        bars.x, bars.y = 50, 60
        bars.width, bars.height = width - 70, height - 90
        bars.data = [points.values]  # None is a gap, not a zero bar
        bars.bars[0].fillColor = HexColor(_BAR_COLOUR)
        bars.categoryAxis.categoryNames = [short_label(c) for c in points.categories]
        bars.categoryAxis.labels.fontName = font
        bars.categoryAxis.labels.fontSize = 6
        bars.categoryAxis.labels.angle = 30
        bars.categoryAxis.labels.boxAnchor = "ne"
        plotted = [v for v in points.values if v is not None]
        if plotted and min(plotted) >= 0:
            bars.valueAxis.valueMin = 0  # bars start at zero, or their heights mislead
        bars.valueAxis.labels.fontName = font
        bars.valueAxis.labels.fontSize = 6
        drawing.add(bars)
        axis_title = short_label(f"{points.value_label} by {points.category_label}", 120)
        drawing.add(String(4, 4, axis_title, fontName=font, fontSize=7))
    if points.omitted:
        note = f"{points.omitted} more categories not shown"
        drawing.add(String(width - stringWidth(note, font, 7), 4, note, fontName=font, fontSize=7))
    renderPDF.draw(drawing, canvas, x, y)
