"""Report renderers: CSV, XLSX and PDF, each a streaming :class:`~tasks.render.base.ReportWriter`.

``open_writer`` is the one entry point. Before any file exists it checks what every format needs: a known format,
at least one column of a type reports can show, a time zone on the clock and a well-formed chart. The writer it
returns takes Arrow record batches and returns the row count on ``close``. Writers never hold the whole result,
and the same input with the same ``ctx.generated_at`` gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from bulletin.clock import require_aware
from bulletin.errors import DefinitionError
from bulletin.models import FORMATS
from tasks.render.base import ChartData, RenderContext, ReportWriter

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "MEDIA_TYPES",
    "ChartData",
    "RenderContext",
    "ReportWriter",
    "open_writer",
]

MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}
EXTENSIONS: dict[str, str] = {fmt: f".{fmt}" for fmt in FORMATS}


def open_writer(fmt: str, path: Path, schema: pa.Schema, ctx: RenderContext, *, csv_bom: bool = False) -> ReportWriter:
    """Open a writer for ``fmt`` (one of ``FORMATS``) that creates ``path``.

    Raises ``DefinitionError`` for an unknown format, an empty schema, a column type no format can show, a
    ``generated_at`` without a time zone, or a chart whose categories and values differ in number. ``csv_bom``
    only applies to CSV (a UTF-8 byte order mark, which Excel needs to read the file as UTF-8).
    """
    # The writers are imported here, not with the package: a module that needs one small piece of it (the CLI's
    # ``bulletin query`` needs ``sanitize.neutralize_formula``) pays for neither ReportLab nor XlsxWriter.
    from tasks.render.chart import chart_points
    from tasks.render.sanitize import column_kind

    if fmt not in FORMATS:
        raise DefinitionError(f"unknown report format {fmt!r}; expected one of {', '.join(FORMATS)}", field="format")
    if len(schema) == 0:
        raise DefinitionError("the result has no columns", field="schema")
    for column in schema:
        column_kind(column.type)  # the same set of types for every format
    require_aware(ctx.generated_at, "generated_at", field="generated_at", error=DefinitionError)
    if ctx.chart is not None:
        chart_points(ctx.chart)  # a malformed chart fails here, before any file exists
    if fmt == "csv":
        from tasks.render.csv import CsvWriter

        return CsvWriter(path, schema, ctx, csv_bom=csv_bom)
    if fmt == "xlsx":
        from tasks.render.xlsx import XlsxWriter

        return XlsxWriter(path, schema, ctx)
    from tasks.render.pdf import PdfWriter

    return PdfWriter(path, schema, ctx)
