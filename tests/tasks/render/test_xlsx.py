"""XLSX renderer, read back with python-calamine and openpyxl (two independent readers)."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pyarrow as pa
import pytest
from python_calamine import CalamineWorkbook

from bulletin.errors import DefinitionError
from tasks.render import ChartData, RenderContext, open_writer
from tasks.render.sanitize import TRUNCATION_MARKER, XLSX_CELL_LIMIT
from tasks.render.xlsx import MAX_DATA_ROWS, column_letters

SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("qty", pa.int64()),
        ("price", pa.float64()),
        ("amount", pa.decimal128(10, 2)),
        ("ok", pa.bool_()),
        ("day", pa.date32()),
        ("at", pa.timestamp("us")),
    ]
)
HOSTILE = ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx"]


def make_ctx(**changes: object) -> RenderContext:
    base: dict[str, object] = {
        "report_id": "weekly-sales",
        "title": "Weekly sales",
        "description": "Orders by region",
        "recipient": "Ana Lima <ana@example.com>",
        "scope": "region = 'EU'",
        "generated_at": datetime(2024, 5, 1, 9, 0, tzinfo=ZoneInfo("Europe/London")),
        "timezone": "Europe/London",
        "column_labels": {"qty": "Quantity"},
        "chart": ChartData("Amount by city", "City", "Amount", ["London", "=evil", "Lisbon"], [3.0, 1.5, math.nan]),
    }
    base.update(changes)
    return RenderContext(**base)  # type: ignore[arg-type]


def make_batch(names: Sequence[str | None]) -> pa.RecordBatch:
    n = len(names)
    return pa.record_batch(
        [
            pa.array(names, pa.string()),
            pa.array([-5, *range(1, n)], pa.int64()),
            pa.array([2.5, math.nan, math.inf] * (n // 3) + [None] * (n % 3), pa.float64()),
            pa.array([Decimal("-3.20")] * n, pa.decimal128(10, 2)),
            pa.array([True, False] * (n // 2) + [None] * (n % 2), pa.bool_()),
            pa.array([date(2024, 2, 29)] * (n - 1) + [date(1899, 12, 31)], pa.date32()),
            pa.array([datetime(2024, 1, 2, 3, 4, 5)] * n, pa.timestamp("us")),
        ],
        schema=SCHEMA,
    )


def render(path: Path, batches: list[pa.RecordBatch], ctx: RenderContext | None = None) -> int:
    writer = open_writer("xlsx", path, SCHEMA, ctx or make_ctx())
    for batch in batches:
        writer.write_batch(batch)
    return writer.close()


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("xlsx") / "r.xlsx"
    names = [*HOSTILE, "plain", 'q"uote & <tag>', "ünïcødé 😀", "line\nbreak", "_x0041_", "", None]
    assert render(path, [make_batch(names)], make_ctx(truncated_at=13)) == 13
    return path


def test_calamine_reads_typed_cells(book: Path) -> None:
    workbook = CalamineWorkbook.from_path(str(book))
    assert workbook.sheet_names == ["Summary", "Data"]
    rows = workbook.get_sheet_by_name("Data").to_python()
    assert rows[0] == ["name", "Quantity", "price", "amount", "ok", "day", "at"]
    assert rows[1] == ["'=1+1", -5, 2.5, -3.2, True, date(2024, 2, 29), datetime(2024, 1, 2, 3, 4, 5)]
    assert rows[2][2] == ""  # NaN cannot be a number in Excel: an empty cell
    assert rows[13][5] == "1899-12-31"  # before Excel's calendar is right: ISO text
    assert rows[12][0] == ""
    assert rows[13][0] == ""
    assert len(rows) == 14


def test_openpyxl_reads_types_formats_and_sheet_features(book: Path) -> None:
    workbook = openpyxl.load_workbook(book)
    sheet = workbook["Data"]
    assert sheet["B2"].value == -5
    assert sheet["B2"].data_type == "n"
    assert sheet["D2"].value == pytest.approx(-3.2)
    assert sheet["E2"].value is True
    assert sheet["F2"].value == datetime(2024, 2, 29)
    assert sheet["F2"].number_format == "yyyy-mm-dd"
    assert sheet["G2"].is_date
    assert all(cell.font.b for cell in sheet[1])
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == "A1:G14"
    assert sheet.column_dimensions["A"].width >= 8
    assert all(cell.data_type != "f" for row in sheet.iter_rows() for cell in row)


def test_strings_stay_strings_and_are_neutralised(book: Path) -> None:
    expected = ["'" + h for h in HOSTILE] + ["plain", 'q"uote & <tag>', "ünïcødé 😀", "line\nbreak", "_x0041_", ""]
    calamine = CalamineWorkbook.from_path(str(book)).get_sheet_by_name("Data").to_python()
    assert [r[0] for r in calamine[1:13]] == expected  # the CR survives: written as &#13;
    sheet = openpyxl.load_workbook(book)["Data"]
    names = [sheet.cell(row=r, column=1).value for r in range(2, 15)]
    # Excel (and calamine) decode _xHHHH_ in strings, so a literal one is written with its underscore escaped;
    # openpyxl decodes no such escapes and shows the raw text.
    assert names[10] == "_x005F_x0041_"
    assert names[:10] == expected[:10]
    assert names[11:] == ["", None]  # an empty string stays a string; a null is no cell at all


def test_summary_sheet_and_native_chart(book: Path) -> None:
    workbook = openpyxl.load_workbook(book)
    summary = workbook["Summary"]
    facts = {row[0]: row[1] for row in summary.iter_rows(values_only=True) if row[0]}
    assert summary["A1"].value == "Weekly sales"
    assert facts["Description"] == "Orders by region"
    assert facts["Prepared for"] == "Ana Lima <ana@example.com>"
    assert facts["Scope"] == "region = 'EU'"
    assert facts["Generated"] == "2024-05-01 09:00:00 BST (Europe/London, UTC+01:00)"
    assert facts["Rows"] == 13
    assert "first 13 rows" in facts["Truncated"]
    assert "'=evil" in facts  # chart categories are data too
    assert len(summary._charts) == 1
    assert workbook.active.title == "Summary"
    with zipfile.ZipFile(book) as archive:
        chart = archive.read("xl/charts/chart1.xml").decode()
    assert '<c:barDir val="col"/>' in chart
    assert "Amount by city" in chart


def test_illegal_characters_removed_and_long_cells_truncated(tmp_path: Path) -> None:
    path = tmp_path / "r.xlsx"
    render(path, [make_batch(["bell\x07 nul\x00 \ufffe end", "=" + "y" * 40_000, "ok"])])
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("Data").to_python()
    assert rows[1][0] == "bell nul  end"
    long_cell = str(rows[2][0])
    assert long_cell.startswith("'=yyy")
    assert long_cell.endswith(TRUNCATION_MARKER)
    assert len(long_cell) == XLSX_CELL_LIMIT


def test_zone_aware_timestamps_are_wall_clock_in_their_zone(tmp_path: Path) -> None:
    schema = pa.schema([("at", pa.timestamp("s", tz="Europe/London"))])
    path = tmp_path / "tz.xlsx"
    writer = open_writer("xlsx", path, schema, make_ctx(chart=None))
    utc_eight = datetime(2024, 7, 1, 8, 0, tzinfo=ZoneInfo("UTC"))
    writer.write_batch(pa.record_batch([pa.array([utc_eight], schema.field("at").type)], schema=schema))
    writer.close()
    assert openpyxl.load_workbook(path)["Data"]["A2"].value == datetime(2024, 7, 1, 9, 0)


def test_many_batches_and_empty_result(tmp_path: Path) -> None:
    path = tmp_path / "many.xlsx"
    assert render(path, [make_batch([f"r{i}-{j}" for j in range(30)]) for i in range(40)]) == 1200
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("Data").to_python()
    assert len(rows) == 1201
    assert rows[-1][0] == "r39-29"
    empty = tmp_path / "empty.xlsx"
    assert render(empty, [], make_ctx(chart=None)) == 0
    workbook = openpyxl.load_workbook(empty)
    assert workbook["Data"].auto_filter.ref == "A1:G1"
    assert workbook["Summary"]._charts == []


def test_same_input_gives_identical_bytes(tmp_path: Path) -> None:
    render(tmp_path / "a.xlsx", [make_batch(["x", "=y", None])])
    render(tmp_path / "b.xlsx", [make_batch(["x", "=y", None])])
    assert (tmp_path / "a.xlsx").read_bytes() == (tmp_path / "b.xlsx").read_bytes()


def test_more_rows_than_a_sheet_holds_is_refused(tmp_path: Path) -> None:
    schema = pa.schema([("n", pa.int8())])
    writer = open_writer("xlsx", tmp_path / "big.xlsx", schema, make_ctx())
    too_many = pa.record_batch([pa.nulls(MAX_DATA_ROWS + 1, pa.int8())], schema=schema)
    with pytest.raises(DefinitionError, match="at most 1,048,575"):
        writer.write_batch(too_many)
    writer.write_batch(too_many.slice(0, 3))
    assert writer.close() == 3


def test_column_letters() -> None:
    assert [column_letters(i) for i in (0, 25, 26, 701, 702, 16_383)] == ["A", "Z", "AA", "ZZ", "AAA", "XFD"]


def test_less_common_types_are_typed_cells(tmp_path: Path) -> None:
    columns = {
        "nothing": pa.nulls(3),
        "u64": pa.array([1, None, 2**63], pa.uint64()),
        "f16": pa.array([1.5, None, 2.0], pa.float16()),
        "d64": pa.array([date(2024, 1, 1), None, date(1, 1, 1)], pa.date64()),
        "ns": pa.array([datetime(2024, 1, 1, 12), None, datetime(1800, 1, 1)], pa.timestamp("ns")),
        "dec": pa.array([None, 1, -2], pa.decimal256(40, 3)),
        "view": pa.array(["a", None, "=b"], pa.string_view()),
        "dict": pa.array(["=a", None, "b"]).dictionary_encode(),
    }
    batch = pa.record_batch(list(columns.values()), names=list(columns))
    path = tmp_path / "types.xlsx"
    writer = open_writer("xlsx", path, batch.schema, make_ctx(chart=None))
    writer.write_batch(batch)
    assert writer.close() == 3
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("Data").to_python()
    assert rows[1] == ["", 1, 1.5, date(2024, 1, 1), datetime(2024, 1, 1, 12), "", "a", "'=a"]
    assert rows[2] == ["", "", "", "", "", 1, "", ""]
    assert rows[3][1:4] == [float(2**63), 2.0, "0001-01-01"]
    assert rows[3][5:] == [-2, "'=b", "b"]


@pytest.mark.parametrize(
    "values",
    [
        ["plain", "text", None, "ünïcode ✓"],
        ["O'Brien & Sons", "plain"],
        ["a<b", "c>d"],
        ["line\rbreak", "x"],
        ["=1+1", "plain"],
        ["\tTAB", "-2", "+3", "@SUM(A1)"],
        ["bad\x00char", "ok"],
        ["_x0041_", "ok"],
        ["x" * 40_000, "ok"],
    ],
)
def test_the_clean_column_shortcut_writes_what_the_full_path_writes(
    values: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.render import xlsx

    column = pa.array(values, pa.string())
    rows = pa.array([str(i + 2) for i in range(len(values))])
    styles = xlsx.Styles(1, 2, 3)
    fast = xlsx.cell_xml(column, "text", rows, "C", styles).to_pylist()
    monkeypatch.setattr(xlsx, "_text_columns", lambda columns: [xlsx._escaped(c) for c in columns])
    assert fast == xlsx.cell_xml(column, "text", rows, "C", styles).to_pylist()
