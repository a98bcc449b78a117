"""What every renderer receives and the streaming interface it implements.

A renderer is opened once per file, fed Arrow record batches in query order, and closed. It never holds the whole
result: memory stays flat whatever the row count. The same context, batches and clock give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from bulletin.datasets import ColumnFormat
from tasks.arrow import keep_pandas_out

keep_pandas_out()  # before any writer converts Python objects to Arrow (see tasks/arrow.py)


@dataclass(frozen=True)
class ChartData:
    """One series for the report's chart: a measure aggregated by a category, computed in the same scope."""

    title: str
    category_label: str
    value_label: str
    categories: list[str]
    values: list[float]
    #: Categories are points in time, in time order: drawn as a line. Else bars, largest first (shape_chart).
    time: bool = False
    #: Categories left out of the bars (folded into the last "Other" bar for a sum or count), said under the chart.
    omitted: int = 0
    #: The measure over every category (a sum or a count adds up; an average does not: None).
    total: float | None = None
    #: How the measure's values read (the measure column's declared format; a count's is an integer), or None
    value_format: ColumnFormat | None = None


@dataclass(frozen=True)
class RenderContext:
    """Everything around the rows. All strings here may hold user data and must be escaped by the renderer."""

    report_id: str
    title: str
    description: str
    recipient: str  # who it is for, e.g. "Ana Lima <ana@example.com>"
    scope: str  # the secure filters applied, human-readable
    generated_at: datetime  # timezone-aware; shown with its time zone
    timezone: str  # IANA name of generated_at's zone, e.g. "Europe/London"
    column_labels: dict[str, str] = field(default_factory=dict)  # column name -> header label; default: the name
    chart: ChartData | None = None
    truncated_at: int | None = None  # set when the row limit cut the result: the file must say so
    period: str | None = None  # the days the data covers, for the reader ("25 – 31 Oct 2026"); None: not stated
    no_rows: str = "No rows."  # what a file with no rows says instead of an empty table (no_rows_sentence)
    #: column name -> how readers see it (the dataset's ``format``); a column without one is shown as it is
    column_formats: dict[str, ColumnFormat] = field(default_factory=dict)
    #: the reader's locale (BCP 47, ``de-DE``) for numbers, dates and the generation time; None: none declared
    #: (declared formats then follow en-GB, and the generation time keeps its ISO form)
    locale: str | None = None
    #: number columns that get a totals row at the end of the table (PDF, XLSX): the report's ``totals``
    totals: tuple[str, ...] = ()


class ReportWriter(Protocol):
    """A file being written. ``close`` returns the number of data rows written.

    ``truncated_at`` is given to ``close`` when the row limit cut the result: that is only known once the rows are
    read, so the file says so at its end (the CSV's last row, the XLSX summary sheet, the PDF's last page).
    """

    def write_batch(self, batch: pa.RecordBatch) -> None: ...

    def close(self, *, truncated_at: int | None = None) -> int: ...


class WriterFactory(Protocol):
    def __call__(self, path: Path, schema: pa.Schema, ctx: RenderContext) -> ReportWriter: ...
