"""The report's chart: one aggregated series, shaped once to answer a question, then drawn natively by each format.

``shape_chart`` is where a chart is decided (pure): bars sorted by value, the ``top`` largest and one "Other" bar
for the rest (a sum or a count can be added up; an average cannot, so the rest are only counted); a date or time
category keeps its time order and becomes a line. The PDF (tasks/render/chart_pdf.py), the XLSX (``add_xlsx_chart``,
a native Excel chart over the same numbers, on the Summary sheet) and the email's PNG (tasks/email/chart_png.py) all
draw the ``ChartData`` it returns, so the three show the same bars. ``human_number`` writes values as a reader says
them: ``3.6M``, ``250k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from bulletin.errors import DefinitionError
from tasks.render.base import ChartData
from tasks.render.sanitize import plain_line, sanitize_xlsx_text

#: Points of a time series drawn at most (the latest); more make a line no one can read.
MAX_TIME_POINTS = 400
#: Category labels longer than this are cut (with an ellipsis).
MAX_LABEL_CHARS = 28
#: Excel's number format for the value axis and the bars' labels: the same human units as ``human_number``.
XLSX_HUMAN_FORMAT = '[>=999500]0.0,,"M";[>=999.5]0,"k";0.#'
#: The "Other" bar's colour, in every format: the rest added up is not one of the categories.
OTHER_COLOUR = "#A5A5A5"
#: Bars beside each other rather than stacked label under label: fewer bars, short labels.
_UPRIGHT_MAX_BARS, _UPRIGHT_MAX_LABEL = 6, 10


@dataclass(frozen=True)
class ChartPoints:
    title: str
    category_label: str
    value_label: str
    categories: list[str]
    values: list[float | None]
    omitted: int  # categories not drawn (folded into "Other", or left out)
    time: bool

    @property
    def other(self) -> bool:
        """Whether the last bar is "Other", the categories beyond the top ones added up: drawn in grey."""
        return (
            not self.time and bool(self.omitted) and bool(self.categories) and self.categories[-1].startswith("Other")
        )

    @property
    def horizontal(self) -> bool:
        """Bars lying down, labels at their left: many bars, or labels too long to stand under one."""
        if self.time:
            return False
        longest = max((len(c) for c in self.categories), default=0)
        return len(self.categories) > _UPRIGHT_MAX_BARS or longest > _UPRIGHT_MAX_LABEL


def shape_chart(
    rows: list[tuple[Any, Any]], *, top: int, agg: str, title: str, category_label: str, value_label: str
) -> ChartData:
    """The chart of ``rows`` (category, value), as the warehouse returned them in category order."""
    values = [_number(v) for _, v in rows]
    total = sum(values) if agg in ("sum", "count") else None
    if rows and all(isinstance(c, date) for c, _ in rows):  # a datetime is a date too
        kept = list(zip(rows, values, strict=True))[-MAX_TIME_POINTS:]
        return ChartData(
            title=title,
            category_label=category_label,
            value_label=value_label,
            categories=[_moment(c) for (c, _), _ in kept],
            values=[v for _, v in kept],
            time=True,
            omitted=len(rows) - len(kept),
            total=total,
        )
    ranked = sorted(zip((str(c) for c, _ in rows), values, strict=True), key=lambda cv: -cv[1])
    shown, rest = ranked[:top], ranked[top:]
    if rest and agg in ("sum", "count") and len(rest) > 1:
        shown.append((f"Other ({len(rest)})", sum(v for _, v in rest)))
    elif len(rest) == 1:
        shown, rest = ranked, []
    return ChartData(
        title=title,
        category_label=category_label,
        value_label=value_label,
        categories=[c for c, _ in shown],
        values=[v for _, v in shown],
        omitted=len(rest),
        total=total,
    )


def chart_points(chart: ChartData) -> ChartPoints:
    """Validate a chart's series and make its values plottable (NaN and infinities become gaps)."""
    if len(chart.categories) != len(chart.values):
        raise DefinitionError(
            f"chart has {len(chart.categories)} categories but {len(chart.values)} values", field="chart"
        )
    values = [v if isinstance(v, int | float) and math.isfinite(v) else None for v in chart.values]
    return ChartPoints(
        title=chart.title,
        category_label=chart.category_label,
        value_label=chart.value_label,
        categories=[str(c) for c in chart.categories],
        values=values,
        omitted=chart.omitted,
        time=chart.time,
    )


def chart_rows(chart: ChartData, locale: str | None = None) -> list[tuple[str, str]]:
    """The chart's bars as (label, value) text, for the email's table and alt text: in the measure's declared
    format and the reader's ``locale`` (``€2,745,637.63``), else thousands separated."""
    if chart.value_format is not None:
        from tasks.render.display import format_value  # Babel's data only when a format asks for it

        values = [("" if v is None else format_value(v, chart.value_format, locale)) for v in chart.values]
        return list(zip(chart.categories, values, strict=True))
    whole = all(v is None or float(v).is_integer() for v in chart.values)
    shape = "{:,.0f}" if whole else "{:,.2f}"  # counts as counts; money keeps its cents on every line
    return [(c, "" if v is None else shape.format(v)) for c, v in zip(chart.categories, chart.values, strict=True)]


def human_number(value: float) -> str:
    """A value as a reader says it: ``3.6M``, ``250k``, ``1.2k``, ``950``, ``0.25``; ``-1.5M`` below zero."""
    size = abs(value)
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if size >= limit * 0.9995:
            scaled = value / limit
            return f"{scaled:.0f}{suffix}" if abs(scaled) >= 99.95 else f"{scaled:.1f}{suffix}".replace(".0", "")
    return f"{value:.0f}" if size >= 100 or value == int(value) else f"{value:.2g}"


def omitted_note(points: ChartPoints) -> str:
    """The line under a chart that left categories out: folded into Other, or not shown."""
    if not points.omitted:
        return ""
    if points.time:
        return f"only the latest {len(points.categories)} points are drawn"
    return "" if points.other else f"{points.omitted} smaller categories not shown"


def time_labels(points: ChartPoints) -> list[str]:
    """A time axis's labels, short: ``25 Oct`` (the year when the points span more than one), ``25 Oct 09:30``."""
    moments = [datetime.fromisoformat(c) for c in points.categories]
    years = {m.year for m in moments}
    with_time = any(m.hour or m.minute for m in moments)
    shape = "%d %b" + (" %Y" if len(years) > 1 else "") + (" %H:%M" if with_time else "")
    return [m.strftime(shape).lstrip("0") for m in moments]


def short_label(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    text = plain_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def add_xlsx_chart(
    workbook: Any, sheet: Any, points: ChartPoints, chart_row: int, number_format: str = "#,##0.##"
) -> int:
    """Put a native chart at ``chart_row`` of ``sheet`` and, below it, the two-column table it plots: bars largest
    first (lying down when there are many or their labels are long), a line for a time series, the values in human
    units on the bars. Returns the row after the table.

    XlsxWriter objects are typed ``Any`` because the library ships no type information. Every text is sanitised:
    XlsxWriter reads a chart title or series name that starts with ``=`` as a cell reference.
    """
    first_row = chart_row + (math.ceil(xlsx_chart_height(points) / 20) + 1 if points.categories else 0)
    bold = workbook.add_format({"bold": True})
    sheet.write_string(first_row, 0, sanitize_xlsx_text(points.category_label), bold)
    sheet.write_string(first_row, 1, sanitize_xlsx_text(points.value_label), bold)
    number = workbook.add_format({"num_format": number_format})  # the measure's declared format, when it has one
    for i, (category, value) in enumerate(zip(points.categories, points.values, strict=True)):
        sheet.write_string(first_row + 1 + i, 0, sanitize_xlsx_text(category))
        if value is None:
            sheet.write_blank(first_row + 1 + i, 1, None)
        else:
            sheet.write_number(first_row + 1 + i, 1, value, number)
    last_row = first_row + len(points.categories)
    note = omitted_note(points)
    if note:
        sheet.write_string(last_row + 1, 0, note[:1].upper() + note[1:] + ".")
        last_row += 1
    if not points.categories:
        return last_row + 1
    sheet.insert_chart(chart_row, 0, _xlsx_chart(workbook, sheet.get_name(), points, first_row))
    return last_row + 1


def _xlsx_chart(workbook: Any, name: str, points: ChartPoints, first_row: int) -> Any:
    kind = "line" if points.time else ("bar" if points.horizontal else "column")
    chart = workbook.add_chart({"type": kind})
    last = first_row + len(points.categories)
    series: dict[str, Any] = {
        "name": sanitize_xlsx_text(points.value_label),
        "categories": [name, first_row + 1, 0, last, 0],
        "values": [name, first_row + 1, 1, last, 1],
        "fill": {"color": "#4472C4"},
        "line": {"color": "#4472C4", "width": 2} if points.time else {"none": True},
    }
    if not points.time:
        series["data_labels"] = {"value": True, "num_format": XLSX_HUMAN_FORMAT}
    if points.other:
        series["points"] = [None] * (len(points.categories) - 1) + [{"fill": {"color": OTHER_COLOUR}}]
    chart.add_series(series)
    value_axis = {"num_format": XLSX_HUMAN_FORMAT, "major_gridlines": {"visible": True, "line": {"color": "#D9D9D9"}}}
    category_axis: dict[str, Any] = {"name": sanitize_xlsx_text(points.category_label)}
    if kind == "bar":
        # Excel draws a bar chart's first category at the bottom: reversed, the largest is on top, and the value
        # axis, crossing at the last category, stays at the bottom.
        category_axis.update({"reverse": True, "crossing": "max"})
    value_axis["name"] = sanitize_xlsx_text(points.value_label)
    chart.set_title({"name": sanitize_xlsx_text(points.title)})
    # XlsxWriter names a bar chart's axes by where they lie: its x axis is the values, lying along the bottom.
    chart.set_x_axis(value_axis if kind == "bar" else category_axis)
    chart.set_y_axis(category_axis if kind == "bar" else value_axis)
    chart.set_legend({"none": True})
    chart.set_size({"width": 720, "height": xlsx_chart_height(points)})
    return chart


def xlsx_chart_height(points: ChartPoints) -> int:
    """The Excel chart's height in pixels: a row of 26 per lying bar, else a fixed box."""
    return 120 + 26 * len(points.categories) if points.horizontal else 360


def _number(value: Any) -> float:
    try:
        number = float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _moment(value: date | datetime) -> str:
    return value.isoformat(sep=" ", timespec="minutes") if isinstance(value, datetime) else value.isoformat()
