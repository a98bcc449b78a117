"""CSV renderer: RFC 4180 on top of Arrow's C++ CSV writer.

Arrow does the heavy lifting (number formatting, quoting, CRLF line ends) batch by batch, so memory stays flat and
the speed is Arrow's. We add what Arrow does not know about: header labels, formula-injection neutralisation of
string columns (a vectorised regex before each batch) and the truncation note.

Layout:

* optional UTF-8 BOM (``csv_bom``), which Excel needs to read UTF-8 rather than the local code page;
* one header row with ``ctx.column_labels.get(name, name)``;
* the data rows. Arrow quotes every string value and any value that needs it, doubling inner quotes; nulls are
  empty unquoted fields, so an empty string (``""``) and a null stay distinguishable. Numbers are never quoted
  and never neutralised: ``-5`` in an integer column stays ``-5``. Floats keep ``nan``/``inf`` as Arrow writes
  them; timestamps are ISO-like (``2024-01-02 03:04:05.123456``; zone-aware ones in their column's zone with its
  offset, ``2024-07-01 09:00:00+0100``);
* when ``ctx.truncated_at`` is set, one final row whose first field is
  ``# truncated: first N rows shown`` and whose other fields are empty, so every row has the same field count
  and strict readers still parse the file. A reader can drop it by the ``# truncated:`` prefix.
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from bulletin.errors import DefinitionError
from tasks.render.base import RenderContext
from tasks.render.sanitize import neutralize_formula, neutralize_formula_array

BOM = b"\xef\xbb\xbf"
EOL = "\r\n"
TRUNCATION_PREFIX = "# truncated:"


def truncation_note(truncated_at: int) -> str:
    """The first field of the final row of a truncated CSV."""
    return f"{TRUNCATION_PREFIX} first {truncated_at} rows shown"


def format_row(fields: list[str]) -> bytes:
    """One RFC 4180 record (quotes where needed, CRLF), for the few rows we write outside Arrow."""
    out = io.StringIO()
    csv.writer(out, lineterminator=EOL, quoting=csv.QUOTE_MINIMAL).writerow(fields)
    return out.getvalue().encode("utf-8")


def _writable_type(dtype: pa.DataType) -> pa.DataType:
    """The type a column is written as: dictionaries decoded, views and 64-bit dates made plain."""
    if pa.types.is_dictionary(dtype):
        return _writable_type(dtype.value_type)
    if pa.types.is_string_view(dtype):
        return pa.string()
    if pa.types.is_date64(dtype):
        return pa.date32()
    return dtype


def _is_text(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype))


class CsvWriter:
    """Streams record batches into one CSV file. Open with :func:`tasks.render.open_writer`."""

    def __init__(self, path: Path, schema: pa.Schema, ctx: RenderContext, *, csv_bom: bool = False) -> None:
        self._ctx = ctx
        self._schema = pa.schema([pa.field(f.name, _writable_type(f.type)) for f in schema])
        self._text_columns = [i for i, f in enumerate(self._schema) if _is_text(f.type)]
        self._rows = 0
        self._sink = pa.OSFile(str(path), "wb")
        try:
            if csv_bom:
                self._sink.write(BOM)
            labels = [neutralize_formula(ctx.column_labels.get(name, name)) for name in schema.names]
            self._sink.write(format_row(labels))
            options = pacsv.WriteOptions(include_header=False, eol=EOL, quoting_style="needed")
            self._writer = pacsv.CSVWriter(self._sink, self._schema, write_options=options)
        except pa.ArrowException as exc:
            self._sink.close()
            raise DefinitionError(f"CSV cannot hold this result: {exc}", field="schema") from exc

    def write_batch(self, batch: pa.RecordBatch) -> None:
        if batch.schema.names != self._schema.names:
            raise DefinitionError(f"batch columns {batch.schema.names} differ from {self._schema.names}")
        columns = [col.cast(field.type) for col, field in zip(batch.columns, self._schema, strict=True)]
        for i in self._text_columns:
            columns[i] = neutralize_formula_array(columns[i])
        self._writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self._schema))
        self._rows += batch.num_rows

    def close(self, *, truncated_at: int | None = None) -> int:
        if truncated_at is not None:
            self._ctx = replace(self._ctx, truncated_at=truncated_at)
        self._writer.close()
        if self._ctx.truncated_at is not None:
            note = [truncation_note(self._ctx.truncated_at)] + [""] * (len(self._schema) - 1)
            self._sink.write(format_row(note))
        self._sink.close()
        return self._rows
