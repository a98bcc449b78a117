"""PDF renderer: pages drawn as rows arrive, on ReportLab's low-level canvas.

Platypus (``LongTable``) needs every row before it lays out the first page, and measures each cell several times.
Here each batch is turned into display strings column by column, clipped to its column with an ellipsis, and
drawn straight onto the page; a full page is finished and the next begun. Only ReportLab's compressed page
streams stay in memory, never the rows. The page total and the row count are not known until the end, so each
page draws a form XObject that is defined once, at ``close``.

Nothing here goes through a markup parser: text is drawn with text objects and ``drawString``, which take it
literally, after :func:`tasks.render.sanitize.plain_line` has turned control characters into spaces. The font is
DejaVu Sans where the system has it (Latin, Greek, Cyrillic and more), else Helvetica (Latin-1 only; other
characters show as boxes).

Layout, A4 landscape: page 1 opens with the title, description, recipient, scope, generation time with zone, row
count, truncation note and the chart; every page has the report title at the top, the table header, striped rows
and "Page N of M" at the bottom.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from reportlab.lib.colors import Color
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.utils import simpleSplit
from reportlab.pdfbase.pdfmetrics import registerFont, stringWidth
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from bulletin.datasets import ColumnFormat
from bulletin.errors import DefinitionError
from tasks.render.base import RenderContext
from tasks.render.chart import chart_points
from tasks.render.chart_pdf import chart_height, draw_pdf_chart
from tasks.render.display import column_texts, generated_text, suits
from tasks.render.sanitize import Kind, column_kind, plain_line, plain_line_array
from tasks.render.totals import TOTAL_LABEL, Totals

PAGE_WIDTH, PAGE_HEIGHT = (float(side) for side in landscape(A4))
MARGIN = 36.0
FONT_SIZE, ROW_HEIGHT, PADDING = 7.5, 10.5, 3.0
CHART_HEIGHT = 190.0
ELLIPSIS = "…"
NUMBER_OVERFLOW = "###"
_CHUNK_ROWS = 4_096  # rows turned into Python strings at once: bounds memory whatever the batch size
_SAMPLE_ROWS = 200
_TABLE_TOP = PAGE_HEIGHT - MARGIN - 14  # below the running title
_TABLE_BOTTOM = MARGIN + 6
_STRIPE = Color(0.94, 0.95, 0.97)
_RULE = Color(0.55, 0.55, 0.6)
_PAGE_TOTAL, _ROW_TOTAL = "bulletin-page-total", "bulletin-row-total"
_DEJAVU_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF")


@functools.cache
def table_fonts() -> tuple[str, str]:
    """(regular, bold) font names: DejaVu Sans when installed (fonts-dejavu-core), else the built-in Helvetica."""
    for folder in _DEJAVU_DIRS:
        regular, bold = Path(folder, "DejaVuSans.ttf"), Path(folder, "DejaVuSans-Bold.ttf")
        if regular.is_file() and bold.is_file():
            registerFont(TTFont("BulletinSans", str(regular)))
            registerFont(TTFont("BulletinSans-Bold", str(bold)))
            return "BulletinSans", "BulletinSans-Bold"
    return "Helvetica", "Helvetica-Bold"


def clip_text(text: str, width: float, font: str, size: float) -> str:
    """``text`` if it fits in ``width`` points, else its longest prefix that fits followed by an ellipsis."""
    # No glyph in these fonts is narrower than a fifth of an em, so more characters than this cannot fit.
    text = text[: int(width / (size * 0.2)) + 1]
    if stringWidth(text, font, size) <= width:
        return text
    room = width - stringWidth(ELLIPSIS, font, size)
    low, high = 0, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if stringWidth(text[:mid], font, size) <= room:
            low = mid
        else:
            high = mid - 1
    return text[:low].rstrip() + ELLIPSIS


def wrap_text(text: str, width: float, font: str, size: float, max_lines: int) -> list[str]:
    """Word-wrap into at most ``max_lines`` lines; the last shown line ends with an ellipsis if text was cut."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        lines.extend(simpleSplit(plain_line(paragraph), font, size, width) or [""])
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = clip_text(lines[-1].rstrip() + " " + ELLIPSIS, width, font, size)
    return [clip_text(line, width, font, size) for line in lines]


def display_strings(column: pa.Array, kind: Kind) -> list[str]:
    """What a column shows: one line of text per value, "" for null."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if kind == "null":
        return [""] * len(column)
    if kind == "float":
        # Twelve significant digits: 0.1 + 0.2 prints as 0.3, as a spreadsheet shows it, not 0.30000000000000004.
        return ["" if v is None else format(v, ".12g") for v in column.cast(pa.float64()).to_pylist()]
    if kind == "datetime":
        if column.type.tz is not None:
            column = pc.local_timestamp(column)  # wall-clock time in the column's zone, as XLSX shows it
        column = column.cast(pa.timestamp("s"), safe=False)  # whole seconds are enough on paper
    texts = column.cast(pa.string())
    if kind == "text":
        texts = plain_line_array(texts)
    result: list[str] = pc.fill_null(texts, "").to_pylist()
    return result


def reader_strings(column: pa.Array, kind: Kind, fmt: ColumnFormat | None, ctx: RenderContext) -> list[str]:
    """What a column shows a reader: its declared format in the reader's locale where the format suits the
    values (a number format on numbers, a date format on dates), else :func:`display_strings`."""
    if fmt is None or not suits(fmt, kind):
        return display_strings(column, kind)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column_texts(column.to_pylist(), fmt, ctx.locale, ctx.timezone)


def column_widths(
    labels: list[str], samples: list[list[str]], numeric: list[bool], total: float, fonts: tuple[str, str]
) -> list[float]:
    """Share ``total`` points between columns in proportion to what they need: the header, and the widest sampled
    value of a number column or the 90th-percentile value of any other (one long comment should not take the page).
    """
    regular, bold = fonts
    wanted = []
    for label, values, is_number in zip(labels, samples, numeric, strict=True):
        sizes = sorted(stringWidth(v, regular, FONT_SIZE) for v in values) or [0.0]
        typical = sizes[-1] if is_number else sizes[int(0.9 * (len(sizes) - 1))]
        need = max(stringWidth(label, bold, FONT_SIZE), typical) + 2 * PADDING
        wanted.append(min(max(need, 28.0), total * 0.4))
    scale = total / sum(wanted)
    return [w * scale for w in wanted]


class PdfWriter:
    """Streams record batches into one PDF file. Open with :func:`tasks.render.open_writer`."""

    def __init__(self, path: Path, schema: pa.Schema, ctx: RenderContext) -> None:
        self._ctx = ctx
        self._fonts = table_fonts()
        self._names = schema.names
        self._kinds = [column_kind(f.type) for f in schema]
        self._labels = [plain_line(ctx.column_labels.get(n, n)) for n in schema.names]
        self._right = [kind in ("number", "float") for kind in self._kinds]
        self._formats = [ctx.column_formats.get(name) for name in schema.names]
        self._totals = Totals(self._names, self._kinds, ctx.totals)
        self._generated = generated_text(ctx.generated_at, ctx.timezone, ctx.locale)
        self._title = plain_line(ctx.title)
        # Every page's running title says which days it covers: a page printed alone still says what it is.
        self._running = f"{self._title}, {plain_line(ctx.period)}" if ctx.period else self._title
        # invariant=1 fixes the document ID and dates; the date formatter then shows generated_at instead.
        self._canvas = Canvas(str(path), pagesize=(PAGE_WIDTH, PAGE_HEIGHT), invariant=1, pageCompression=1)
        stamp = ctx.generated_at.strftime("D:%Y%m%d%H%M%S") + _pdf_offset(ctx.generated_at.strftime("%z"))
        self._canvas.setDateFormatter(lambda *_: stamp)
        self._canvas.setTitle(self._title)
        self._canvas.setAuthor("Bulletin")
        self._canvas.setCreator("Bulletin")
        self._canvas.setSubject(plain_line(ctx.description)[:500])
        self._widths: list[float] = []
        self._page = 0
        self._y = 0.0  # baseline of the next row
        self._rows = 0
        self._drawn = 0  # rows of the current chunk already drawn
        self._header = True  # False for a file with no rows: its sentence takes the table's place

    def write_batch(self, batch: pa.RecordBatch) -> None:
        if batch.schema.names != self._names:
            raise DefinitionError(f"batch columns {batch.schema.names} differ from {self._names}")
        if batch.num_rows == 0:
            return
        if not self._widths:
            self._begin(batch.slice(0, _SAMPLE_ROWS))
        if self._totals:
            self._totals.add(batch)
        for start in range(0, batch.num_rows, _CHUNK_ROWS):
            chunk = batch.slice(start, _CHUNK_ROWS)
            columns = [self._clipped(c, i) for i, c in enumerate(chunk.columns)]
            done = 0
            while done < chunk.num_rows:
                if self._y < _TABLE_BOTTOM:
                    self._finish_page()
                    self._start_page()
                fit = int((self._y - _TABLE_BOTTOM) / ROW_HEIGHT) + 1
                count = min(fit, chunk.num_rows - done)
                self._draw_rows([c[done : done + count] for c in columns])
                done += count
            self._rows += chunk.num_rows
            self._drawn = 0

    def close(self, *, truncated_at: int | None = None) -> int:
        if not self._widths:
            self._header = self._rows > 0
            self._begin(None)
        if self._rows == 0:
            self._canvas.setFont(self._fonts[0], 12)
            for line in wrap_text(self._ctx.no_rows, PAGE_WIDTH - 2 * MARGIN, self._fonts[0], 12, 3):
                self._canvas.drawString(MARGIN, self._y, line)
                self._y -= 15
        if self._totals and self._rows:
            self._draw_totals()
        if truncated_at is not None and self._ctx.truncated_at is None:
            # Only known now that the rows are read: say it under the table's last row.
            if self._y < _TABLE_BOTTOM:
                self._finish_page()
                self._start_page()
            self._canvas.setFont(self._fonts[1], 9)
            self._canvas.drawString(
                MARGIN, self._y, f"Truncated: only the first {truncated_at:,} rows are shown (row limit)."
            )
        self._finish_page()
        self._define_total(_PAGE_TOTAL, str(self._page), FONT_SIZE)
        self._define_total(_ROW_TOTAL, f"{self._rows:,}", 9)
        self._canvas.save()
        return self._rows

    def _clipped(self, column: pa.Array, index: int) -> list[str]:
        width = self._widths[index] - 2 * PADDING
        font = self._fonts[0]
        values = reader_strings(column, self._kinds[index], self._formats[index], self._ctx)
        # ASCII glyphs are at most about one em wide, so short ASCII strings need no measuring.
        fits = int(width / (FONT_SIZE * 1.05))
        if self._right[index]:
            # A number cut short reads as another number: show ### instead, as a spreadsheet does.
            return [
                s if len(s) <= fits or stringWidth(s, font, FONT_SIZE) <= width else NUMBER_OVERFLOW for s in values
            ]
        return [s if len(s) <= fits and s.isascii() else clip_text(s, width, font, FONT_SIZE) for s in values]

    def _begin(self, sample: pa.RecordBatch | None) -> None:
        samples: list[list[str]] = [[] for _ in self._kinds]
        if sample is not None:
            samples = [
                reader_strings(c, k, f, self._ctx)
                for c, k, f in zip(sample.columns, self._kinds, self._formats, strict=True)
            ]
        self._widths = column_widths(self._labels, samples, self._right, PAGE_WIDTH - 2 * MARGIN, self._fonts)
        self._start_page()

    def _start_page(self) -> None:
        self._page += 1
        canvas, (regular, bold) = self._canvas, self._fonts
        canvas.setFillColor(_RULE)
        canvas.setFont(regular, 7)
        canvas.drawString(MARGIN, PAGE_HEIGHT - MARGIN, clip_text(self._running, PAGE_WIDTH / 2, regular, 7))
        canvas.setFillColorRGB(0, 0, 0)
        top = self._draw_cover() if self._page == 1 else _TABLE_TOP
        if not self._header:
            self._y = top
            return
        x = MARGIN
        canvas.setFont(bold, FONT_SIZE)
        for label, width, right in zip(self._labels, self._widths, self._right, strict=True):
            text = clip_text(label, width - 2 * PADDING, bold, FONT_SIZE)
            if right:
                canvas.drawRightString(x + width - PADDING, top, text)
            else:
                canvas.drawString(x + PADDING, top, text)
            x += width
        canvas.setStrokeColor(_RULE)
        canvas.setLineWidth(0.6)
        canvas.line(MARGIN, top - 3, PAGE_WIDTH - MARGIN, top - 3)
        self._y = top - ROW_HEIGHT - 1

    def _draw_cover(self) -> float:
        """Page 1's heading block and chart; returns the baseline for the table header below them."""
        ctx, canvas, (regular, bold) = self._ctx, self._canvas, self._fonts
        width = PAGE_WIDTH - 2 * MARGIN
        y = PAGE_HEIGHT - MARGIN - 22
        for line in wrap_text(ctx.title, width, bold, 16, 2):
            canvas.setFont(bold, 16)
            canvas.drawString(MARGIN, y, line)
            y -= 19
        if ctx.period:
            canvas.setFont(regular, 13)
            canvas.drawString(MARGIN, y + 1, clip_text(plain_line(ctx.period), width, regular, 13))
            y -= 18
        facts = [
            ("", ctx.description, 5),
            ("Prepared for: ", ctx.recipient, 1),
            ("Scope: ", ctx.scope, 3),
            ("Generated: ", self._generated, 1),
        ]
        if ctx.truncated_at is not None:
            note = f"only the first {ctx.truncated_at:,} rows are shown (row limit)."
            facts.append(("Truncated: ", note, 1))
        for label, value, max_lines in facts:
            indent = stringWidth(label, bold, 9)
            canvas.setFont(bold, 9)
            canvas.drawString(MARGIN, y, label)
            canvas.setFont(regular, 9)
            for line in wrap_text(value, width - indent, regular, 9, max_lines):
                canvas.drawString(MARGIN + indent, y, line)
                y -= 12
        canvas.setFont(bold, 9)
        canvas.drawString(MARGIN, y, "Rows: ")
        self._draw_total(_ROW_TOTAL, MARGIN + stringWidth("Rows: ", bold, 9), y)
        y -= 8
        if ctx.chart is not None and ctx.chart.categories:  # an empty chart would be an empty frame
            points = chart_points(ctx.chart)
            height = chart_height(points, CHART_HEIGHT)
            draw_pdf_chart(canvas, points, MARGIN, y - height, 560, height, regular)
            y -= height + 4
        return y - 14

    def _draw_rows(self, columns: list[list[str]]) -> None:
        canvas, count = self._canvas, len(columns[0])
        canvas.setFillColor(_STRIPE)
        for i in range(1 - (self._rows + self._drawn) % 2, count, 2):  # every other data row
            y = self._y - i * ROW_HEIGHT
            canvas.rect(MARGIN, y - 3, PAGE_WIDTH - 2 * MARGIN, ROW_HEIGHT, stroke=0, fill=1)
        canvas.setFillColorRGB(0, 0, 0)
        text = canvas.beginText()
        text.setFont(self._fonts[0], FONT_SIZE, ROW_HEIGHT)
        x = MARGIN
        regular = self._fonts[0]
        for values, width, right in zip(columns, self._widths, self._right, strict=True):
            if right:
                edge = x + width - PADDING
                for i, value in enumerate(values):
                    text.setTextOrigin(edge - stringWidth(value, regular, FONT_SIZE), self._y - i * ROW_HEIGHT)
                    text.textLine(value)
            else:
                # One origin per column: textLine moves down by the leading, which is the row height.
                text.setTextOrigin(x + PADDING, self._y)
                for value in values:
                    text.textLine(value)
            x += width
        canvas.drawText(text)
        self._y -= count * ROW_HEIGHT
        self._drawn += count

    def _draw_totals(self) -> None:
        """The totals row under the table's last row, bold, over a rule: each sum as its column shows numbers."""
        if self._y < _TABLE_BOTTOM:
            self._finish_page()
            self._start_page()
        canvas, bold = self._canvas, self._fonts[1]
        canvas.setStrokeColor(_RULE)
        canvas.setLineWidth(0.6)
        canvas.line(MARGIN, self._y + ROW_HEIGHT - 3, PAGE_WIDTH - MARGIN, self._y + ROW_HEIGHT - 3)
        canvas.setFont(bold, FONT_SIZE)
        label, x = self._totals.label_column(len(self._kinds)), MARGIN
        for i, width in enumerate(self._widths):
            if i == label:
                canvas.drawString(x + PADDING, self._y, TOTAL_LABEL)
            elif i in self._totals.sums:
                shown = reader_strings(pa.array([self._totals.sums[i]]), self._kinds[i], self._formats[i], self._ctx)
                text = shown[0] if stringWidth(shown[0], bold, FONT_SIZE) <= width - 2 * PADDING else NUMBER_OVERFLOW
                canvas.drawRightString(x + width - PADDING, self._y, text)
            x += width
        self._y -= ROW_HEIGHT

    def _finish_page(self) -> None:
        canvas, regular = self._canvas, self._fonts[0]
        canvas.setFont(regular, FONT_SIZE)
        canvas.setFillColor(_RULE)
        canvas.drawString(MARGIN, MARGIN - 14, self._generated)
        prefix = f"Page {self._page} of "
        x = PAGE_WIDTH - MARGIN - 40 - stringWidth(prefix, regular, FONT_SIZE)
        canvas.drawString(x, MARGIN - 14, prefix)
        self._draw_total(_PAGE_TOTAL, x + stringWidth(prefix, regular, FONT_SIZE), MARGIN - 14)
        canvas.showPage()

    def _draw_total(self, form: str, x: float, y: float) -> None:
        # A forward reference: the form is defined by _define_total when the number is known.
        self._canvas.saveState()
        self._canvas.translate(x, y)
        self._canvas.doForm(form)
        self._canvas.restoreState()

    def _define_total(self, form: str, text: str, size: float) -> None:
        self._canvas.beginForm(form)
        self._canvas.setFont(self._fonts[0], size)
        self._canvas.drawString(0, 0, text)
        self._canvas.endForm()


def _pdf_offset(offset: str) -> str:
    """``+0100`` -> ``+01'00'``, the form PDF dates use."""
    return f"{offset[:3]}'{offset[3:]}'" if offset else "Z"
