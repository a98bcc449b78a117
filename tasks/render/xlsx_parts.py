"""The XLSX parts besides the data sheet, made by XlsxWriter once per process and shape, then filled per file.

Why: XlsxWriter took about 40 % of a small file's time (a 1,000-row report) building the same workbook, styles,
theme and relationships for every recipient, then zipping them, which the renderer unzipped and zipped again.
Now XlsxWriter makes each shape of workbook once (``workbook_template``: the data sheet's column count and which
facts the Summary lists: a period, a sentence for a file with no rows, a note that the rows were cut), with unique
slot words where a file's own values go; the parts without slots are compressed once (``Packed``) and copied into
every file, and the few with slots (the Summary's strings and row count, document properties, the autofilter's
range) are filled by string replacement. A report with a chart still has its whole workbook made per file
(``book_parts``): the chart's XML is the recipient's data.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import xlsxwriter

from tasks.render.archive import Packed, pack
from tasks.render.base import RenderContext
from tasks.render.chart import add_xlsx_chart, chart_points
from tasks.render.display import DEFAULT_LOCALE, excel_format, generated_text
from tasks.render.sanitize import remove_xlsx_illegal, sanitize_xlsx_text

SUMMARY_SHEET, DATA_SHEET = "Summary", "Data"
DATE_FORMAT, DATETIME_FORMAT = "yyyy-mm-dd", "yyyy-mm-dd hh:mm:ss"
DATA_PART = "xl/worksheets/sheet2.xml"  # XlsxWriter numbers sheets in creation order: Summary, then Data
_SLOTTED = ("xl/sharedStrings.xml", "xl/worksheets/sheet1.xml", "xl/workbook.xml", "docProps/core.xml")
_ROWS_SLOT = 987_654_321_123  # a row count no sheet can have
_FILTER_SLOT = 1_048_575  # the autofilter's last row in a template: Excel's last row
_CREATED_SLOT = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
_SLOT_RE = re.compile(r">(bulletinslot\d{4}x)<")
EXCEL_ESCAPE_RE = re.compile(r"_(?=x[0-9A-Fa-f]{4}_)")
#: The Summary's facts every file has, in order; also the shape any writer may ask for the styles.
DEFAULT_LABELS = ("Description", "Prepared for", "Scope", "Generated", "Report")


@dataclass(frozen=True)
class Styles:
    """Cell style (xf) indices in the workbook's styles part: the base three, then per declared number format
    code (``"€"#,##0.00``) its style, and its bold style for a totals row."""

    header: int
    date: int
    datetime: int
    numbers: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Template:
    """One shape of workbook: parts copied as they are, and parts with slots to fill."""

    fixed: tuple[Packed, ...]
    slotted: dict[str, str]
    styles: Styles
    last_column: str  # the data sheet's last column letters, for the autofilter's range


def new_book(out: io.BytesIO, number_formats: tuple[str, ...] = ()) -> tuple[Any, Styles]:
    """An XlsxWriter workbook with the data sheet's formats claimed first, so their indices are the same in every
    workbook (XlsxWriter numbers formats on first use) and the sheet XML can name them before the book exists.
    ``number_formats``: the declared columns' format codes, each claimed plain and bold (for a totals row)."""
    book = xlsxwriter.Workbook(out, {"in_memory": True, "strings_to_formulas": False})
    formats = [{"bold": True}, {"num_format": DATE_FORMAT}, {"num_format": DATETIME_FORMAT}]
    header, day, moment = (book.add_format(f)._get_xf_index() for f in formats)
    numbers = {code: book.add_format({"num_format": code})._get_xf_index() for code in number_formats}
    totals = {code: book.add_format({"num_format": code, "bold": True})._get_xf_index() for code in number_formats}
    return book, Styles(header, day, moment, numbers=numbers, totals=totals)


def summary_values(ctx: RenderContext, rows: int) -> Iterator[tuple[str, str]]:
    """The Summary sheet's (label, text) rows, in order: the period first, when the report states one, and for a
    file of ``rows`` 0 the sentence that says so."""
    if ctx.period is not None:
        yield "Period", ctx.period
    if rows == 0:
        yield "Note", ctx.no_rows
    generated = generated_text(ctx.generated_at, ctx.timezone, ctx.locale)
    values = (ctx.description, ctx.recipient, ctx.scope, generated, ctx.report_id)
    yield from zip(DEFAULT_LABELS, values, strict=True)
    if ctx.truncated_at is not None:
        yield "Truncated", f"Only the first {ctx.truncated_at:,} rows are included (row limit)."


def book_parts(
    ctx: RenderContext, rows: int, columns: int, number_formats: tuple[str, ...] = ()
) -> list[tuple[str, bytes]]:
    """Every part but the data sheet, made by XlsxWriter for this one file (``ctx``'s values, not slots)."""
    out = io.BytesIO()
    book, _ = new_book(out, number_formats)
    book.set_properties(_properties(ctx.title, ctx.description[:255], f"report {ctx.report_id}", ctx.generated_at))
    summary = book.add_worksheet(SUMMARY_SHEET)
    data = book.add_worksheet(DATA_SHEET)
    facts = [(label, sanitize_xlsx_text(text)) for label, text in summary_values(ctx, rows)]
    last_row = _write_summary(book, summary, sanitize_xlsx_text(ctx.title), facts, rows)
    if ctx.chart is not None:
        chart_row = last_row + 2
        measure = ctx.chart.value_format
        code = excel_format(measure, ctx.locale or DEFAULT_LOCALE) if measure and measure.is_number else "#,##0.##"
        add_xlsx_chart(book, summary, chart_points(ctx.chart), chart_row, code)
    data.autofilter(0, 0, rows, columns - 1)  # gives the workbook its filter's defined name
    summary.activate()
    book.close()
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as made:
        return [(i.filename, made.read(i.filename)) for i in made.infolist() if i.filename != DATA_PART]


def _properties(title: str, subject: str, comments: str, created: datetime) -> dict[str, Any]:
    return {
        "title": remove_xlsx_illegal(title),
        "subject": remove_xlsx_illegal(subject),
        "author": "Bulletin",
        "comments": remove_xlsx_illegal(comments),
        "created": created.astimezone(UTC).replace(tzinfo=None),
    }


def _write_summary(book: Any, sheet: Any, title: str, facts: list[tuple[str, str]], rows: int) -> int:
    """Title, then one row per fact, then the row count; returns the row count's row."""
    bold = book.add_format({"bold": True, "valign": "top"})
    wrap = book.add_format({"text_wrap": True, "valign": "top"})
    sheet.set_column(0, 0, 18)
    sheet.set_column(1, 1, 90)
    sheet.set_landscape()
    sheet.fit_to_pages(1, 0)  # printed, the Summary and its chart are one page wide
    sheet.write_string(0, 0, title, book.add_format({"bold": True, "font_size": 14}))
    row = 2
    for label, value in facts:
        sheet.write_string(row, 0, label, bold)
        sheet.write_string(row, 1, value, wrap)
        row += 1
    sheet.write_string(row, 0, "Rows", bold)
    sheet.write_number(row, 1, rows, book.add_format({"align": "left", "num_format": "#,##0"}))
    return row


def _slot(n: int) -> str:
    return f"bulletinslot{n:04d}x"  # letters and digits only: written as they are in every part


@lru_cache(maxsize=64)
def workbook_template(columns: int, labels: tuple[str, ...], number_formats: tuple[str, ...] = ()) -> Template:
    """The parts of every workbook with ``columns`` data columns, the Summary facts ``labels`` (chartless) and the
    data columns' declared ``number_formats``."""
    out = io.BytesIO()
    book, styles = new_book(out, number_formats)
    book.set_properties(_properties(_slot(0), _slot(1), _slot(2), _CREATED_SLOT))
    summary = book.add_worksheet(SUMMARY_SHEET)
    data = book.add_worksheet(DATA_SHEET)
    facts = [(label, _slot(10 + i)) for i, label in enumerate(labels)]
    _write_summary(book, summary, _slot(3), facts, _ROWS_SLOT)
    data.autofilter(0, 0, _FILTER_SLOT, columns - 1)
    summary.activate()
    book.close()
    fixed, slotted = [], {}
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as made:
        for name in made.namelist():
            if name in _SLOTTED:
                slotted[name] = made.read(name).decode("utf-8")
            elif name != DATA_PART:
                fixed.append(pack(name, made.read(name)))
    return Template(tuple(fixed), slotted, styles, column_letters(columns - 1))


def column_letters(index: int) -> str:
    """Zero-based column index to Excel letters: 0 -> A, 26 -> AA."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def xml_escape(text: str, *, excel: bool = False) -> str:
    """Text for an element's content: XML's three, and CR as a reference (readers turn a literal CR into LF).
    ``excel``: a literal ``_xHHHH_`` is kept literal too (Excel decodes it in cell strings), as in the data sheet."""
    for raw, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;")):
        text = text.replace(raw, escaped)
    return EXCEL_ESCAPE_RE.sub("_x005F_", text) if excel else text


def fill_parts(template: Template, ctx: RenderContext, rows: int) -> list[tuple[str, bytes]]:
    """The slotted parts of ``template`` with this file's values."""
    strings = [sanitize_xlsx_text(ctx.title)] + [sanitize_xlsx_text(text) for _, text in summary_values(ctx, rows)]
    cells = {_slot(3): strings[0], **{_slot(10 + i): text for i, text in enumerate(strings[1:])}}
    props = {
        _slot(0): remove_xlsx_illegal(ctx.title),
        _slot(1): remove_xlsx_illegal(ctx.description[:255]),
        _slot(2): remove_xlsx_illegal(f"report {ctx.report_id}"),
    }
    created = ctx.generated_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    parts = dict(template.slotted)
    # One pass each: a value that happens to contain a slot word is written as it is, never filled in turn.
    parts["xl/sharedStrings.xml"] = _SLOT_RE.sub(
        lambda m: f">{xml_escape(cells[m[1]], excel=True)}<" if m[1] in cells else m[0],
        parts["xl/sharedStrings.xml"].replace("<t>bulletinslot", '<t xml:space="preserve">bulletinslot'),
    )
    core = parts["docProps/core.xml"].replace(_CREATED_SLOT.strftime("%Y-%m-%dT%H:%M:%SZ"), created)
    parts["docProps/core.xml"] = _SLOT_RE.sub(lambda m: f">{xml_escape(props[m[1]])}<" if m[1] in props else m[0], core)
    parts["xl/worksheets/sheet1.xml"] = parts["xl/worksheets/sheet1.xml"].replace(
        f"<v>{_ROWS_SLOT}</v>", f"<v>{rows}</v>"
    )
    ref = f"${template.last_column}${_FILTER_SLOT + 1}<"
    parts["xl/workbook.xml"] = parts["xl/workbook.xml"].replace(ref, f"${template.last_column}${rows + 1}<")
    return [(name, text.encode("utf-8")) for name, text in parts.items()]
