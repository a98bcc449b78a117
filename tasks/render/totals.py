"""A report's totals row: the sums of the columns it asks for (``totals`` in the report YAML), kept as batches pass.

The writers stream, so the sums are added batch by batch in Arrow kernels (one per column per batch) and only
read at ``close``. NaN and infinities, which the files show as empty cells, are left out of a float column's sum;
decimals add up exactly (Arrow sums decimal128 without rounding).
"""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks.render.sanitize import Kind

TOTAL_LABEL = "Total"


class Totals:
    """Running sums of the number columns among ``wanted``; empty when the report asks for none."""

    def __init__(self, names: list[str], kinds: list[Kind], wanted: Collection[str]) -> None:
        self.columns = [i for i, (n, k) in enumerate(zip(names, kinds, strict=True)) if n in wanted and k in _SUMMED]
        self.sums: dict[int, Any] = dict.fromkeys(self.columns, 0)
        self._float = {i for i in self.columns if kinds[i] == "float"}

    def __bool__(self) -> bool:
        return bool(self.columns)

    def add(self, batch: pa.RecordBatch) -> None:
        for i in self.columns:
            column = batch.column(i)
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            if i in self._float:
                column = column.cast(pa.float64())
                column = pc.filter(column, pc.fill_null(pc.is_finite(column), False))
            value = pc.sum(column).as_py()
            if value is not None:
                self.sums[i] = self.sums[i] + value

    def label_column(self, count: int) -> int | None:
        """Where "Total" is written: the first column that is not summed (None when every column is)."""
        return next((i for i in range(count) if i not in self.sums), None)


def number_text(value: Any) -> str:
    """A sum as a cell's ``<v>``: plain digits, never an exponent (``str(Decimal)`` may write ``1E+3``)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    return repr(value) if isinstance(value, float) else str(value)


_SUMMED = ("number", "float")
