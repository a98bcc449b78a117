"""The XLSX data sheet's shortcuts (one join per batch, checks on each text column's distinct values, cached row
numbers) write exactly what the general path writes: every value is sanitised and escaped on its own, each
column's cells are made alone, and rows are joined in Python."""

from __future__ import annotations

import math
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from python_calamine import CalamineWorkbook

from tasks.render import RenderContext, open_writer, xlsx, xlsx_pieces
from tasks.render.sanitize import Kind, column_kind

STYLES = xlsx.Styles(1, 2, 3)
ROWS = 1_000
# Each needs work of its own: a formula trigger first, XML's characters, CR, Excel's escape, characters an XLSX
# cannot hold, more bytes than a cell holds (the second and third are cut, the first is not: "é" is one UTF-16
# unit), and a lone surrogate-pair character over the limit.
NEEDS_WORK = [
    *("=1", "+1", "-1", "@x", "\tx", "\rx", "\nx"),
    *("a&b", "a<b", "a>b", "a\rb", "_x0041_", "__x00aF_"),
    *("a\x00b", "a\x1fb", "a\ufffeb", "a\uffffb"),
    "é" * 20_000,
    "x" * 40_000,
    "😀" * 17_000,
]


def general_rows(batch: pa.RecordBatch, first_row: int, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """The sheet rows the long way: no text shortcut, each column's cells alone, rows joined in Python."""
    with monkeypatch.context() as patch:
        patch.setattr(xlsx, "_text_columns", lambda columns: [xlsx._escaped(c) for c in columns])
        refs = pa.array([str(first_row + i) for i in range(batch.num_rows)], pa.string())
        cells = [
            xlsx.cell_xml(column, column_kind(column.type), refs, xlsx.column_letters(i), STYLES).to_pylist()
            for i, column in enumerate(batch.columns)
        ]
    rows = (f'<row r="{first_row + j}">' + "".join(c[j] for c in cells) + "</row>" for j in range(batch.num_rows))
    return "".join(rows).encode()


def fast_rows(batch: pa.RecordBatch, first_row: int) -> bytes:
    return bytes(xlsx.rows_xml(batch, kinds(batch), first_row, STYLES))


def kinds(batch: pa.RecordBatch) -> list[Kind]:
    return [column_kind(f.type) for f in batch.schema]


def mixed_batch(n: int = 24) -> pa.RecordBatch:
    """Every kind of cell, nulls in most columns, values each shortcut must refuse."""
    texts = [*NEEDS_WORK, "plain", "ünïcødé 😀", "line\nbreak", "", None]
    return pa.record_batch(
        {
            "text": pa.array((texts * n)[:n], pa.string()),
            "clean": pa.array(["ok", "fine"] * (n // 2), pa.string()),
            "last_dirty": pa.array(["ok"] * (n - 1) + ["=bad"], pa.string()),
            "some_null": pa.array(["a", None] * (n // 2), pa.string()),
            "int": pa.array([*range(n - 1), None], pa.int64()),
            "float": pa.array([1.5, math.nan, math.inf, -math.inf, None, 0.1 + 0.2] * (n // 6), pa.float64()),
            "f32": pa.array([1.5] * n, pa.float32()),
            "dec": pa.array([Decimal("-3.20"), None] * (n // 2), pa.decimal128(10, 2)),
            "dec_full": pa.array([Decimal("1234.5")] * n, pa.decimal256(40, 3)),
            "bool": pa.array([True, False, None] * (n // 3), pa.bool_()),
            "bool_full": pa.array([True, False] * (n // 2), pa.bool_()),
            "day": pa.array([date(2024, 2, 29), date(1899, 12, 31), None, date(1, 1, 1)] * (n // 4), pa.date32()),
            "day_ok": pa.array([date(2024, 2, 29)] * n, pa.date32()),
            "at": pa.array([datetime(2024, 1, 2, 3, 4, 5), None, datetime(1800, 1, 1)] * (n // 3), pa.timestamp("us")),
            "zoned": pa.array([datetime(2024, 7, 1, 8)] * n, pa.timestamp("s", tz="Europe/Lisbon")),
            "view": pa.array(["a", None, "=b"] * (n // 3), pa.string_view()),
            "large": pa.array(["a&b"] * n, pa.large_string()),
            "dict": pa.array(["=a", None, "b"] * (n // 3)).dictionary_encode(),
            "nothing": pa.nulls(n),
        }
    )


def clean_batch(dirty: str | None = None, *, nulls: bool = False, rows: int = ROWS) -> pa.RecordBatch:
    """Three text columns with nothing to do, bar ``dirty`` as the middle column's last value."""
    middle: list[str | None] = [f"item {i % 7}" for i in range(rows)]
    if nulls:
        middle[::10] = [None] * len(middle[::10])
    if dirty is not None:
        middle[-1] = dirty
    return pa.record_batch(
        {
            "region": pa.array(["EMEA"] * rows),
            "middle": pa.array(middle, pa.string()),
            "unique": pa.array([f"Customer {i}" for i in range(rows)]),
            "n": pa.array(range(rows), pa.int64()),
        }
    )


@pytest.mark.parametrize("first_row", [2, 3, 9_000])
def test_mixed_batch_rows_are_what_the_general_path_writes(first_row: int, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = mixed_batch()
    assert fast_rows(batch, first_row) == general_rows(batch, first_row, monkeypatch)


def test_text_columns_too_big_to_check_together_are_checked_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    checks = count_calls(monkeypatch, xlsx, "_untouched")
    monkeypatch.setattr(xlsx, "_CONCAT_LIMIT", 0)
    for batch in (mixed_batch(), clean_batch()):
        assert fast_rows(batch, 2) == general_rows(batch, 2, monkeypatch)
    assert checks == [7 + 3]  # each text column of both batches alone, none together


def test_with_no_room_for_cached_row_pieces_the_rows_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xlsx_pieces, "_ROW_PIECES", xlsx_pieces.RowPieces(0))
    for batch in (mixed_batch(), clean_batch()):
        assert fast_rows(batch, 2) == general_rows(batch, 2, monkeypatch)


@pytest.mark.parametrize("rows", [1, 1_024, 1_025, 8_192])
def test_cached_row_numbers_of_every_size(rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for batch in (clean_batch(rows=rows), clean_batch(rows=rows).slice(rows // 2)):
        assert fast_rows(batch, 2) == general_rows(batch, 2, monkeypatch)


@pytest.mark.parametrize("nulls", [False, True], ids=["no-nulls", "nulls"])
@pytest.mark.parametrize("dirty", NEEDS_WORK, ids=[repr(v[:8]) for v in NEEDS_WORK])
def test_one_value_needing_work_in_a_batch_takes_the_slow_path(
    dirty: str, nulls: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = clean_batch(dirty, nulls=nulls)
    assert fast_rows(batch, 2) == general_rows(batch, 2, monkeypatch)


def test_a_batch_without_nulls_is_one_join_and_one_text_check(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = clean_batch()
    fast_rows(batch, 2)  # the process's cached row numbers are made on first use
    joins, checks = (
        count_calls(monkeypatch, pc, "binary_join_element_wise"),
        count_calls(monkeypatch, xlsx, "_untouched"),
    )
    fast_rows(batch, 2)
    assert (joins, checks) == ([1], [1])


def test_only_a_batch_needing_work_checks_each_column(monkeypatch: pytest.MonkeyPatch) -> None:
    checks = count_calls(monkeypatch, xlsx, "_untouched")
    fast_rows(clean_batch("a&b"), 2)
    assert checks == [4]  # all three columns at once, then each alone


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    """Counts calls of ``owner.name`` from now on, in the one item of the list returned."""
    calls, real = [0], getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_files_read_back_alike_by_both_readers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = mixed_batch()
    fast, general = tmp_path / "fast.xlsx", tmp_path / "general.xlsx"
    write(fast, batch)
    with monkeypatch.context() as patch:
        patch.setattr(xlsx, "rows_xml", lambda b, _kinds, first, _styles, *_: general_rows(b, first, monkeypatch))
        write(general, batch)
    assert fast.read_bytes() == general.read_bytes()
    calamine = [CalamineWorkbook.from_path(str(p)).get_sheet_by_name("Data").to_python() for p in (fast, general)]
    assert calamine[0] == calamine[1]
    assert calamine[0][1][0] == "'=1"
    grids = [[[c.value for c in row] for row in openpyxl.load_workbook(p)["Data"].iter_rows()] for p in (fast, general)]
    assert grids[0] == grids[1]
    assert len(grids[0]) == batch.num_rows + 1


def write(path: Path, batch: pa.RecordBatch) -> None:
    ctx = RenderContext(
        report_id="cells",
        title="Cells",
        description="",
        recipient="a@example.com",
        scope="",
        generated_at=datetime(2024, 5, 1, 9, 0, tzinfo=ZoneInfo("UTC")),
        timezone="UTC",
        column_labels={},
        chart=None,
    )
    writer = open_writer("xlsx", path, batch.schema, ctx)
    writer.write_batch(batch)
    writer.close()
