"""The report's chart in the PDF: vector graphics drawn with ReportLab's chart library from ``ChartPoints``.

Bars largest first, lying down with their labels at the left when there are many or the labels are long, upright
otherwise; each bar carries its value in human units (``3.6M``), as does the value axis. A time series is a line in
time order, every few dates labelled. ReportLab draws labels with plain ``drawString``, which parses no markup; line
breaks are flattened so a label stays on its line.
"""

from __future__ import annotations

import math
from typing import Any

from reportlab.graphics import renderPDF
from reportlab.graphics.charts.barcharts import HorizontalBarChart, VerticalBarChart
from reportlab.graphics.charts.linecharts import HorizontalLineChart
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib.colors import HexColor
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

from tasks.render.chart import OTHER_COLOUR, ChartPoints, human_number, omitted_note, short_label, time_labels

_BAR_COLOUR = HexColor("#4472C4")  # Excel's default first series colour, so both formats look alike
_GRID = HexColor("#D9D9D9")
#: Height of one lying bar and its gap, in points; the chart grows with its bars up to the height it is given.
_BAR_PITCH = 16


def chart_height(points: ChartPoints, most: float) -> float:
    """The height the chart needs: lying bars need a pitch each, the rest a fixed box; never more than ``most``."""
    if points.horizontal:
        return min(most, 44 + _BAR_PITCH * len(points.categories))
    return most


def draw_pdf_chart(
    canvas: Canvas, points: ChartPoints, x: float, y: float, width: float, height: float, font: str
) -> None:
    """Draw the chart with its title in the box whose lower-left corner is (x, y)."""
    drawing = Drawing(width, height)
    drawing.add(String(0, height - 11, short_label(points.title, 120), fontName=font, fontSize=10))
    if points.categories:
        plot = _line(points, width, height, font) if points.time else _bars(points, width, height, font)
        drawing.add(plot)
    note = omitted_note(points)
    if note:
        drawing.add(String(width - stringWidth(note, font, 7), height - 10, note, fontName=font, fontSize=7))
    renderPDF.draw(drawing, canvas, x, y)


def _bars(points: ChartPoints, width: float, height: float, font: str) -> Any:
    labels = [short_label(c) for c in points.categories]
    if points.horizontal:
        bars: Any = HorizontalBarChart()
        gutter = min(width * 0.35, 8 + max(stringWidth(label, font, 7) for label in labels))
        bars.x, bars.y, bars.width, bars.height = gutter, 14, width - gutter - 40, height - 34
        bars.categoryAxis.reverseDirection = 1  # the largest on top
        bars.barLabels.boxAnchor, bars.barLabels.dx = "w", 3
    else:
        bars = VerticalBarChart()
        bars.x, bars.y, bars.width, bars.height = 40, 26, width - 50, height - 48
        bars.barLabels.boxAnchor, bars.barLabels.dy = "s", 2
    bars.data = [points.values]  # None is a gap, not a zero bar
    bars.bars[0].fillColor = _BAR_COLOUR
    bars.bars[0].strokeColor = None
    if points.other:
        bars.bars[(0, len(points.categories) - 1)].fillColor = HexColor(OTHER_COLOUR)
    bars.barLabelFormat = human_number
    bars.barLabels.fontName, bars.barLabels.fontSize = font, 7
    bars.categoryAxis.categoryNames = labels
    bars.categoryAxis.labels.fontName, bars.categoryAxis.labels.fontSize = font, 7
    plotted = [v for v in points.values if v is not None]
    if plotted and min(plotted) >= 0:
        bars.valueAxis.valueMin = 0  # bars start at zero, or their lengths mislead
    _value_axis(bars.valueAxis, font)
    return bars


def _line(points: ChartPoints, width: float, height: float, font: str) -> Any:
    line = HorizontalLineChart()
    line.x, line.y, line.width, line.height = 40, 26, width - 50, height - 48
    line.data = [points.values]
    line.lines[0].strokeColor, line.lines[0].strokeWidth = _BAR_COLOUR, 1.5
    labels = time_labels(points)
    room = max(stringWidth(label, font, 7) for label in labels) + 8
    step = max(1, math.ceil(len(labels) * room / line.width))  # as many dates as fit, evenly spaced
    line.categoryAxis.categoryNames = [c if i % step == 0 else "" for i, c in enumerate(labels)]
    line.categoryAxis.labels.fontName, line.categoryAxis.labels.fontSize = font, 7
    plotted = [v for v in points.values if v is not None]
    if plotted and min(plotted) >= 0:
        line.valueAxis.valueMin = 0
    _value_axis(line.valueAxis, font)
    return line


def _value_axis(axis: Any, font: str) -> None:
    axis.labels.fontName, axis.labels.fontSize = font, 7
    axis.labelTextFormat = human_number
    axis.visibleGrid, axis.gridStrokeColor, axis.gridStrokeWidth = 1, _GRID, 0.5
    axis.visibleAxis = 0
