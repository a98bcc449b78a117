"""The report's chart as a PNG for the email's HTML body: the same bars as the PDF and the XLSX (tasks/render/chart.py).

Drawn with Pillow at twice the size it is shown (``SCALE``), so it is sharp on high-density screens and legible at
600 px wide: bars lying down, largest on top, each with its category at the left and its value in human units at
its end; a time series is a line with dates under it. The same chart gives the same bytes: no timestamps, and
Pillow's bundled font rather than whatever the machine has.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from bulletin.errors import DefinitionError
from tasks.render.base import ChartData
from tasks.render.chart import (
    OTHER_COLOUR,
    ChartPoints,
    chart_points,
    human_number,
    omitted_note,
    short_label,
    time_labels,
)

#: Pixels per CSS pixel: the image is drawn this much larger than the width the HTML gives it.
SCALE = 2
#: The width the HTML shows the image at, in CSS pixels.
SHOWN_WIDTH = 600
_INK, _MUTED, _GRID = "#333333", "#666666", "#D9D9D9"
_BAR_COLOUR = "#4472C4"  # as in the PDF and Excel's default first series
_BAR_PITCH, _HEAD, _FOOT = 26, 34, 24  # CSS pixels


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font: the same glyphs, hence the same bytes, on every machine with this Pillow version.
    return ImageFont.load_default(size=size * SCALE)


def render_chart_png(chart: ChartData, *, width: int = SHOWN_WIDTH) -> bytes:
    """The chart PNG, ``width`` CSS pixels wide (drawn at ``SCALE`` times that)."""
    if not 300 <= width <= 1000:
        raise DefinitionError(f"chart width {width} is out of range (300-1000)", field="chart")
    points = chart_points(chart)
    height = _HEAD + _FOOT + (len(points.categories) * _BAR_PITCH if points.horizontal else 220)
    image = Image.new("RGB", (width * SCALE, height * SCALE), "white")
    draw = ImageDraw.Draw(image)
    draw.text((0, 4 * SCALE), short_label(points.title, 80), fill=_INK, font=_font(15))
    box = (0, _HEAD, width - 24, height - _FOOT)  # room for the last label past the plot
    if not any(v is not None for v in points.values):
        draw.text((width * SCALE // 2, height * SCALE // 2), "No data", fill=_MUTED, font=_font(12), anchor="mm")
    elif points.horizontal:
        _lying_bars(draw, points, box)
    else:
        _upright(draw, points, box)
    footer = short_label(f"{points.value_label} by {points.category_label}", 70)
    note = omitted_note(points)
    draw.text(
        (0, (height - 6) * SCALE), footer + (f"; {note}" if note else ""), fill=_MUTED, font=_font(11), anchor="ld"
    )
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def _lying_bars(draw: ImageDraw.ImageDraw, points: ChartPoints, box: tuple[int, int, int, int]) -> None:
    _, top, right, _ = box
    labels = [short_label(c, 30) for c in points.categories]
    gutter = min(right * 0.4, 8 + max(draw.textlength(label, font=_font(12)) for label in labels) / SCALE)
    plotted = [v for v in points.values if v is not None]
    high = max(0.0, *plotted) or 1.0
    span = right - gutter - 56  # room for the value after the longest bar
    for i, (label, value) in enumerate(zip(labels, points.values, strict=True)):
        y = top + i * _BAR_PITCH
        middle = (y + _BAR_PITCH / 2) * SCALE
        draw.text(((gutter - 8) * SCALE, middle), label, fill=_INK, font=_font(12), anchor="rm")
        if value is None:
            continue
        length = max(0.0, value) / high * span
        colour = OTHER_COLOUR if points.other and i == len(labels) - 1 else _BAR_COLOUR
        draw.rectangle(
            (gutter * SCALE, (y + 4) * SCALE, (gutter + length) * SCALE, (y + _BAR_PITCH - 4) * SCALE), fill=colour
        )
        draw.text(((gutter + length + 6) * SCALE, middle), human_number(value), fill=_INK, font=_font(12), anchor="lm")


def _upright(draw: ImageDraw.ImageDraw, points: ChartPoints, box: tuple[int, int, int, int]) -> None:
    left, top, right, bottom = box
    plot_left, plot_bottom = left + 44, bottom - 22
    plotted = [v for v in points.values if v is not None]
    low, high = min(0.0, *plotted), max(0.0, *plotted)
    high = high if high > low else low + 1.0

    def y_of(value: float) -> float:
        return (plot_bottom - (value - low) / (high - low) * (plot_bottom - top - 16)) * SCALE

    for tick in (low, (low + high) / 2, high):
        draw.line((plot_left * SCALE, y_of(tick), right * SCALE, y_of(tick)), fill=_GRID, width=SCALE)
        draw.text(((plot_left - 6) * SCALE, y_of(tick)), human_number(tick), fill=_MUTED, font=_font(11), anchor="rm")
    slot = (right - plot_left) / len(points.categories)
    labels = time_labels(points) if points.time else [short_label(c, 12) for c in points.categories]
    room = max(draw.textlength(label, font=_font(11)) for label in labels) / SCALE + 12
    step = max(1, math.ceil(len(labels) * room / (right - plot_left)))  # as many labels as fit, evenly spaced
    coordinates: list[tuple[float, float]] = []
    for i, (label, value) in enumerate(zip(labels, points.values, strict=True)):
        centre = (plot_left + (i + 0.5) * slot) * SCALE
        if i % step == 0:
            draw.text((centre, (plot_bottom + 4) * SCALE), label, fill=_INK, font=_font(11), anchor="ma")
        if value is None:
            continue
        if points.time:
            coordinates.append((centre, y_of(value)))
        else:
            half = slot * 0.35 * SCALE
            draw.rectangle(
                (centre - half, min(y_of(value), y_of(0.0)), centre + half, max(y_of(value), y_of(0.0))),
                fill=_BAR_COLOUR,
            )
            draw.text((centre, y_of(value) - 3 * SCALE), human_number(value), fill=_INK, font=_font(11), anchor="md")
    if len(coordinates) > 1:
        draw.line(coordinates, fill=_BAR_COLOUR, width=2 * SCALE, joint="curve")
