"""XLSX renderer: the data sheet's XML is streamed straight into the zip; XlsxWriter makes everything else.

Why two writers: XlsxWriter (even in ``constant_memory`` mode) spends Python time on every cell, about 6 s per
100,000 rows x 10 columns. Here each batch becomes the sheet's ``<row>`` elements in a handful of vectorised
``pyarrow.compute`` string kernels and goes into a deflate stream, so memory stays flat and time is mostly zlib's.
XlsxWriter, used at ``close`` when the row count is known, writes the small parts that are easy to get wrong by
hand: the workbook, styles, the Summary sheet, the native chart, the autofilter's defined name, document
properties. Its own (empty) copy of the data sheet is dropped and ours takes its place in the zip. Measurements
and the alternatives tried are in docs/benchmarks.md.

Workbook layout: sheet 1 "Summary" (title, description, recipient, scope, generation time with zone, row count,
truncation note, chart), sheet 2 "Data" (bold frozen header with autofilter, typed cells).
Cells: numbers and decimals are numbers (NaN and infinities, which Excel cannot hold, are empty cells), booleans
are booleans, dates and timestamps are Excel serials with a date format (zone-aware timestamps in their column's
wall-clock time; Excel has no time zones; values before 1900-03-01, where Excel's calendar is wrong, are ISO
text), strings are inline strings, sanitised by :mod:`tasks.render.sanitize`, never formulas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from bulletin.errors import DefinitionError
from tasks.render.archive import Archive
from tasks.render.base import RenderContext
from tasks.render.display import excel_formats
from tasks.render.sanitize import (
    FORMULA_TRIGGERS,
    XLSX_CELL_LIMIT,
    XLSX_ILLEGAL_RE2,
    Kind,
    column_kind,
    sanitize_xlsx_text,
    sanitize_xlsx_text_array,
)
from tasks.render.totals import TOTAL_LABEL, Totals, number_text
from tasks.render.xlsx_parts import (
    DATA_PART,
    DEFAULT_LABELS,
    EXCEL_ESCAPE_RE,
    Styles,
    book_parts,
    column_letters,
    fill_parts,
    summary_values,
    workbook_template,
    xml_escape,
)
from tasks.render.xlsx_pieces import SLICE_ROWS, Pieces, join_pieces, row_numbers

__all__ = ["MAX_DATA_ROWS", "Styles", "XlsxWriter", "cell_xml", "column_letters", "rows_xml", "xml_text_array"]

MAX_DATA_ROWS = 1_048_575  # Excel's 1,048,576 rows less the header
MAX_COLUMNS = 16_384
_FEW_VALUES = 64  # at most this many text values are rewritten in Python, not in kernels
_CONCAT_LIMIT = 1 << 30  # bytes of text columns checked together: a string array's offsets stop at 2 GiB
_SERIAL_EPOCH = 25_569  # Excel serial day of 1970-01-01
_FIRST_SERIAL, _LAST_SERIAL = 61, 2_958_465  # 1900-03-01 (before it Excel invents 1900-02-29) .. 9999-12-31
_DAY_UNITS = {"s": 86_400.0, "ms": 86_400e3, "us": 86_400e6, "ns": 86_400e9}
_WIDTH_SAMPLE_ROWS, _MIN_WIDTH, _MAX_WIDTH = 200, 8, 60
_EXCEL_ESCAPE_RE2 = r"_x[0-9A-Fa-f]{4}_"
_FIRST_CHARACTER_RE2 = "^[" + "".join(f"\\x{{{ord(c):02X}}}" for c in FORMULA_TRIGGERS) + "]"
# Anything xml_text_array or sanitize_xlsx_text_array would change, bar length: one regex, one kernel.
_NEEDS_WORK_RE2 = rf"[&<>\r]|{_EXCEL_ESCAPE_RE2}|{XLSX_ILLEGAL_RE2}|{_FIRST_CHARACTER_RE2}"
_NS = (
    'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
)


def xml_text_array(values: pa.Array) -> pa.Array:
    """Text content of an XLSX ``<t>`` element.

    Besides XML's three, CR is written as a character reference because XML readers turn a literal CR into LF,
    and a literal ``_x0041_`` gets its underscore escaped because Excel decodes ``_xHHHH_`` in strings.
    """
    for raw, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;")):
        values = pc.replace_substring(values, raw, escaped)
    hits = pc.fill_null(pc.match_substring_regex(values, _EXCEL_ESCAPE_RE2), False)
    if pc.any(hits).as_py():
        fixed = [EXCEL_ESCAPE_RE.sub("_x005F_", v) for v in pc.filter(values, hits).to_pylist()]
        values = pc.replace_with_mask(values, hits, pa.array(fixed, values.type))
    return values


def _plain(column: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_string_view(column.type) or pa.types.is_large_string(column.type):
        return column.cast(pa.string())
    return column


def _serials(column: pa.Array, kind: Kind) -> pa.Array:
    """Excel serial day numbers of a date or timestamp column."""
    if kind == "date":
        return pc.add(column.cast(pa.date32()).cast(pa.int32()), _SERIAL_EPOCH)
    if column.type.tz is not None:
        column = pc.local_timestamp(column)
    # Nanosecond counts pass 2**53: the float keeps about a microsecond, finer than Excel shows.
    ticks = column.cast(pa.int64()).cast(pa.float64(), safe=False)
    days = pc.divide(ticks, _DAY_UNITS[column.type.unit])
    return pc.add(days, float(_SERIAL_EPOCH))


def _whole(pieces: Pieces, column: pa.Array) -> Pieces:
    """``pieces`` as they are where ``column`` has no nulls; else one array of whole cells, "" where null.

    Any null piece makes binary_join_element_wise's result null, so a column with nulls is joined on its own and
    its nulls become empty strings before it joins the row.
    """
    if not column.null_count:
        return pieces
    return [pc.fill_null(join_pieces(pieces, len(column)), "")]


def _text_pieces(text: pa.Array, rows: pa.Array, ref: str) -> Pieces:
    return [f'<c r="{ref}', rows, '" t="inlineStr"><is><t xml:space="preserve">', text, "</t></is></c>"]


def _text_columns(columns: list[pa.Array]) -> list[pa.Array]:
    """Text columns sanitised and escaped, the work done once per distinct value.

    Columns of reports repeat values (regions, products, names), so the check runs once over the distinct values
    of all the batch's text columns together (one hash, one regex), and only when it finds something is each
    column checked and rewritten on its own dictionary, ``take`` spreading the result back: every value is still
    rewritten exactly as :func:`_escaped` would rewrite it, since each rule acts on one value at a time.
    """
    if not columns:
        return []
    if sum(c.nbytes for c in columns) < _CONCAT_LIMIT and _untouched(pc.unique(pa.concat_arrays(columns))):
        return columns
    encoded = [column.dictionary_encode() for column in columns]
    return [
        column if _untouched(e.dictionary) else _rewritten(e.dictionary).take(e.indices)
        for column, e in zip(columns, encoded, strict=True)
    ]


def _rewritten(values: pa.Array) -> pa.Array:
    """:func:`_escaped`; a few values (a column's dictionary, most often) through the one-string forms of the same
    rules, as the header's labels are: each kernel costs about 15 us however few its values, and there are about
    fifteen."""
    if len(values) > _FEW_VALUES:
        return _escaped(values)
    texts = [None if v is None else xml_escape(sanitize_xlsx_text(v), excel=True) for v in values.to_pylist()]
    return pa.array(texts, pa.string())


def _escaped(values: pa.Array) -> pa.Array:
    """Every rule a text cell needs, applied to every value: the general path the shortcuts must agree with."""
    return xml_text_array(sanitize_xlsx_text_array(values))


def cell_pieces(
    column: pa.Array, kind: Kind, rows: pa.Array, ref: str, styles: Styles, style: int | None = None
) -> Pieces:
    """The ``<c>`` elements of a column (row numbers as strings in ``rows``, column letters ``ref``) as pieces
    for :func:`join_pieces`; a null value is no element at all. ``style``: the column's declared number format's
    style index (a literal in the pieces: it costs nothing per cell).

    ``rows_xml`` joins the pieces of every column in one kernel: joining each column's cells and then the row
    again cost three times as much (docs/benchmarks.md, "XLSX cell building").
    """
    column = _plain(column)
    if kind == "text":
        return _whole(_text_pieces(_text_columns([column])[0], rows, ref), column)
    if kind in ("number", "float"):
        if kind == "float":
            column = column.cast(pa.float64())
            finite = pc.is_finite(column)
            if not pc.all(finite).as_py():  # NaN and infinities: Excel cannot hold them, so no cell
                column = pc.if_else(finite, column, None)
        styled = f'" s="{style}"><v>' if style is not None else '"><v>'
        return _whole([f'<c r="{ref}', rows, styled, column.cast(pa.string()), "</v></c>"], column)
    if kind == "bool":
        flags = pc.if_else(column, "1", "0")
        return _whole([f'<c r="{ref}', rows, '" t="b"><v>', flags, "</v></c>"], column)
    if kind in ("date", "datetime"):
        serials = _serials(column, kind)
        if style is None:
            style = styles.date if kind == "date" else styles.datetime
        pieces: Pieces = [f'<c r="{ref}', rows, f'" s="{style}"><v>', serials.cast(pa.string()), "</v></c>"]
        low, high = pc.min_max(serials).values()
        if low.as_py() is None or (low.as_py() >= _FIRST_SERIAL and high.as_py() < _LAST_SERIAL + 1):
            return _whole(pieces, column)
        in_range = pc.and_(pc.greater_equal(serials, _FIRST_SERIAL), pc.less(serials, _LAST_SERIAL + 1))
        cells = join_pieces(pieces, len(column))
        text = join_pieces(_text_pieces(column.cast(pa.string()), rows, ref), len(column))
        return [pc.fill_null(pc.if_else(in_range, cells, text), "")]
    return []


def cell_xml(column: pa.Array, kind: Kind, rows: pa.Array, ref: str, styles: Styles) -> pa.Array:
    """One ``<c>`` element per value (row numbers as strings in ``rows``, column letters ``ref``); "" for null."""
    return pc.fill_null(join_pieces(cell_pieces(column, kind, rows, ref, styles), len(column)), "")


def _untouched(column: pa.Array) -> bool:
    """Whether sanitising and escaping would leave every value of this text column as it is: no character an XLSX
    cannot hold, no formula trigger first, nothing over a cell's limit, nothing XML or Excel would decode.

    Most columns of real data need nothing: one regex (and a length check that a short column skips) then
    replaces about ten kernels (docs/benchmarks.md).
    """
    if pc.any(pc.match_substring_regex(column, _NEEDS_WORK_RE2)).as_py():
        return False
    # A column holding fewer bytes in all than one cell's limit cannot have a value over it.
    return column.nbytes <= XLSX_CELL_LIMIT or not pc.any(pc.greater(pc.binary_length(column), XLSX_CELL_LIMIT)).as_py()


def rows_xml(
    batch: pa.RecordBatch,
    kinds: list[Kind],
    first_row: int,
    styles: Styles,
    column_styles: Sequence[int | None] | None = None,
) -> memoryview:
    """The ``<row>`` elements of ``batch``, whose first row is sheet row ``first_row`` (1-based). ``column_styles``:
    per column, its declared format's style index, or None for the kind's own."""
    own = column_styles or [None] * len(kinds)
    rows = row_numbers(first_row, batch.num_rows)
    columns = [_plain(column) for column in batch.columns]
    texts = iter(_text_columns([column for column, kind in zip(columns, kinds, strict=True) if kind == "text"]))
    pieces: Pieces = ['<row r="', rows, '">']
    for i, (column, kind) in enumerate(zip(columns, kinds, strict=True)):
        if kind == "text":
            pieces += _whole(_text_pieces(next(texts), rows, column_letters(i)), column)
        else:
            pieces += cell_pieces(column, kind, rows, column_letters(i), styles, own[i])
    first_rows = rows if first_row == 2 and batch.num_rows <= SLICE_ROWS else None  # the cached copy
    joined = join_pieces([*pieces, "</row>"], batch.num_rows, first_rows)
    # A string array's values lie end to end in its data buffer: hand that to zlib as one block, uncopied.
    offsets = memoryview(joined.buffers()[1]).cast("i")  # int32, as a string array's offsets are
    start, end = offsets[joined.offset], offsets[joined.offset + len(joined)]
    return memoryview(joined.buffers()[2])[start:end]


def column_widths(labels: list[str], sample: pa.RecordBatch | None, kinds: list[Kind]) -> list[float]:
    """Widths in characters from the header labels and the first rows: wide enough, never absurd."""
    widths = []
    for i, (label, kind) in enumerate(zip(labels, kinds, strict=True)):
        width = len(label) + 3  # room for the autofilter button
        if kind == "date":
            width = max(width, 11)
        elif kind == "datetime":
            width = max(width, 20)
        elif sample is not None and sample.num_rows and kind != "null":
            shown = _plain(sample.column(i))
            longest = pc.max(pc.utf8_length(shown.cast(pa.string()))).as_py()
            width = max(width, (longest or 0) + 2)
        widths.append(float(min(max(width, _MIN_WIDTH), _MAX_WIDTH)))
    return widths


def sheet_head(widths: list[float], header_row: bytes) -> bytes:
    cols = "".join(f'<col min="{i}" max="{i}" width="{w:g}" customWidth="1"/>' for i, w in enumerate(widths, start=1))
    view = (
        '<sheetViews><sheetView workbookViewId="0"><pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" '
        'state="frozen"/><selection pane="bottomLeft" activeCell="A2" sqref="A2"/></sheetView></sheetViews>'
    )
    head = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet {_NS}>{view}'
        f'<sheetFormatPr defaultRowHeight="15"/><cols>{cols}</cols><sheetData>'
    )
    return head.encode() + header_row


def sheet_tail(filter_ref: str) -> bytes:
    margins = '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/>'
    return f'</sheetData><autoFilter ref="{filter_ref}"/>{margins}</worksheet>'.encode()


def in_zone(batch: pa.RecordBatch, columns: list[int], zone: str) -> pa.RecordBatch:
    """``batch`` with the zone-aware timestamp ``columns`` moved to ``zone``: the reader's wall-clock time."""
    arrays = list(batch.columns)
    for i in columns:
        if pa.types.is_timestamp(arrays[i].type) and arrays[i].type.tz is not None:
            arrays[i] = arrays[i].cast(pa.timestamp(arrays[i].type.unit, tz=zone))
    return pa.RecordBatch.from_arrays(
        arrays, schema=pa.schema([f.with_type(a.type) for f, a in zip(batch.schema, arrays, strict=True)])
    )


def totals_row(totals: Totals, row: int, count: int, styles: Styles, codes: list[str | None]) -> bytes:
    """The totals row under the data: "Total", then per summed column ``SUBTOTAL(109, ...)`` over its cells with
    the sum as the cached value. SUBTOTAL, not SUM: once the reader filters the rows, the total is of those shown;
    the cached value is what readers that compute nothing (python-calamine, previews) show."""
    cells = []
    label = totals.label_column(count)
    for i in range(count):
        ref, letters = f"{column_letters(i)}{row}", column_letters(i)
        if i == label:
            cells.append(f'<c r="{ref}" s="{styles.header}" t="inlineStr"><is><t>{TOTAL_LABEL}</t></is></c>')
        elif i in totals.sums:
            code = codes[i]
            style = styles.totals[code] if code else styles.header
            formula = f"SUBTOTAL(109,{letters}2:{letters}{row - 1})"
            cells.append(f'<c r="{ref}" s="{style}"><f>{formula}</f><v>{number_text(totals.sums[i])}</v></c>')
    return f'<row r="{row}">{"".join(cells)}</row>'.encode()


class XlsxWriter:
    """Streams record batches into one XLSX file. Open with :func:`tasks.render.open_writer`.

    The data sheet streams into the file as batches come; the other parts are added at ``close``: from the
    process's template of this shape (``tasks.render.xlsx_parts``), or made whole for a report with a chart.
    """

    def __init__(self, path: Path, schema: pa.Schema, ctx: RenderContext) -> None:
        if not 0 < len(schema) <= MAX_COLUMNS:
            raise DefinitionError(f"XLSX holds 1 to {MAX_COLUMNS} columns, not {len(schema)}", field="schema")
        self._ctx = ctx
        self._names = schema.names
        self._kinds = [column_kind(f.type) for f in schema]
        self._labels = [sanitize_xlsx_text(ctx.column_labels.get(n, n)) for n in schema.names]
        self._rows = 0
        self._codes = codes = excel_formats(self._names, self._kinds, ctx.column_formats, ctx.locale)
        self._totals = Totals(self._names, self._kinds, ctx.totals)
        self._formats = tuple(dict.fromkeys(code for code in codes if code))  # each distinct code once
        # The sheet XML names style indices before any workbook exists: every workbook numbers them alike.
        self._styles = workbook_template(len(schema), DEFAULT_LABELS, self._formats).styles
        self._column_styles = [self._styles.numbers[code] if code else None for code in codes]
        # Declared timestamps are shown in the reader's zone (the generation time's); others in their own.
        self._zoned = [i for i, (c, k) in enumerate(zip(codes, self._kinds, strict=True)) if c and k == "datetime"]
        self._file = path.open("wb")
        self._zip = Archive(self._file, ctx.generated_at.timetuple()[:6])
        self._started = False  # the data sheet's part is open, started by the first batch

    def _start_sheet(self, sample: pa.RecordBatch | None) -> None:
        # A declared number shows its separators and currency: a little wider than its raw digits.
        widths = [
            w + 4 * (s is not None)
            for w, s in zip(column_widths(self._labels, sample, self._kinds), self._column_styles, strict=True)
        ]
        texts = [xml_escape(label, excel=True) for label in self._labels]  # as xml_text_array would
        header = "".join(
            f'<c r="{column_letters(i)}1" s="{self._styles.header}" t="inlineStr">'
            f'<is><t xml:space="preserve">{text}</t></is></c>'
            for i, text in enumerate(texts)
        )
        self._zip.open_stream(DATA_PART)
        self._zip.write(sheet_head(widths, f'<row r="1">{header}</row>'.encode()))
        self._started = True

    def write_batch(self, batch: pa.RecordBatch) -> None:
        if batch.schema.names != self._names:
            raise DefinitionError(f"batch columns {batch.schema.names} differ from {self._names}")
        if self._rows + batch.num_rows > MAX_DATA_ROWS:
            raise DefinitionError(
                f"XLSX holds at most {MAX_DATA_ROWS:,} data rows; set a row limit or use CSV", field="row_limit"
            )
        if not self._started:
            self._start_sheet(batch.slice(0, _WIDTH_SAMPLE_ROWS))
        if self._zoned:
            batch = in_zone(batch, self._zoned, self._ctx.timezone)
        if self._totals:
            self._totals.add(batch)
        for start in range(0, batch.num_rows, SLICE_ROWS):
            part = batch.slice(start, SLICE_ROWS)
            self._zip.write(rows_xml(part, self._kinds, self._rows + 2, self._styles, self._column_styles))
            self._rows += part.num_rows

    def close(self, *, truncated_at: int | None = None) -> int:
        if truncated_at is not None:
            self._ctx = replace(self._ctx, truncated_at=truncated_at)
        if not self._started:
            self._start_sheet(None)
        last = f"{column_letters(len(self._kinds) - 1)}{self._rows + 1}"
        if self._totals and 0 < self._rows < MAX_DATA_ROWS:  # outside the filter's range: sorting leaves it last
            self._zip.write(totals_row(self._totals, self._rows + 2, len(self._kinds), self._styles, self._codes))
        self._zip.write(sheet_tail(f"A1:{last}"))
        self._zip.close_stream()
        columns, ctx = len(self._kinds), self._ctx
        if ctx.chart is None:
            labels = tuple(label for label, _ in summary_values(ctx, self._rows))
            template = workbook_template(columns, labels, self._formats)
            for part in template.fixed:
                self._zip.add_packed(part)
            parts = fill_parts(template, ctx, self._rows)
        else:
            parts = book_parts(ctx, self._rows, columns, self._formats)
        for name, data in parts:
            self._zip.add(name, data)
        self._zip.close()
        self._file.close()
        return self._rows
