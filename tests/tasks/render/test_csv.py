"""CSV renderer, read back with the standard library's csv module."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from bulletin.errors import DefinitionError
from tasks.render import EXTENSIONS, FORMATS, MEDIA_TYPES, ChartData, RenderContext, open_writer

SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("qty", pa.int64()),
        ("small", pa.int32()),
        ("price", pa.float64()),
        ("amount", pa.decimal128(10, 2)),
        ("ok", pa.bool_()),
        ("day", pa.date32()),
        ("at", pa.timestamp("us")),
    ]
)
NAMES = ["plain", 'with "quotes"', "comma, inside", "line\nbreak", "crlf\r\nbreak", "ünïcødé 東京 😀", "", None]


def make_ctx(**changes: object) -> RenderContext:
    base: dict[str, object] = {
        "report_id": "weekly-sales",
        "title": "Weekly sales",
        "description": "Orders by region",
        "recipient": "Ana Lima <ana@example.com>",
        "scope": "region = 'EU'",
        "generated_at": datetime(2024, 5, 1, 9, 0, tzinfo=ZoneInfo("Europe/London")),
        "timezone": "Europe/London",
        "column_labels": {"qty": "Quantity", "name": "Customer name"},
    }
    base.update(changes)
    return RenderContext(**base)  # type: ignore[arg-type]


def make_batch(names: Sequence[str | None]) -> pa.RecordBatch:
    n = len(names)
    return pa.record_batch(
        [
            pa.array(names, pa.string()),
            pa.array([-5, *range(1, n)], pa.int64()),
            pa.array([None, *range(1, n)], pa.int32()),
            pa.array([1.5] * (n - 1) + [None], pa.float64()),
            pa.array([Decimal("-3.20")] * n, pa.decimal128(10, 2)),
            pa.array([True, False] * (n // 2) + [None] * (n % 2), pa.bool_()),
            pa.array([date(2024, 2, 29)] * n, pa.date32()),
            pa.array([datetime(2024, 1, 2, 3, 4, 5)] * n, pa.timestamp("us")),
        ],
        schema=SCHEMA,
    )


def render(path: Path, batches: list[pa.RecordBatch], ctx: RenderContext | None = None, **kw: bool) -> int:
    writer = open_writer("csv", path, SCHEMA, ctx or make_ctx(), **kw)
    for batch in batches:
        writer.write_batch(batch)
    return writer.close()


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_header_values_and_row_count(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    assert render(path, [make_batch(NAMES)]) == len(NAMES)
    rows = read_rows(path)
    assert rows[0] == ["Customer name", "Quantity", "small", "price", "amount", "ok", "day", "at"]
    assert [r[0] for r in rows[1:]] == [("" if n is None else n) for n in NAMES]
    assert rows[1][1:] == ["-5", "", "1.5", "-3.20", "true", "2024-02-29", "2024-01-02 03:04:05.000000"]
    assert len(rows) == 1 + len(NAMES)


def test_rfc4180_crlf_quotes_and_null_versus_empty(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    render(path, [make_batch(NAMES)])
    raw = path.read_bytes()
    assert raw.startswith(b"Customer name,Quantity,")
    assert b'"with ""quotes"""' in raw
    assert b'"line\nbreak"' in raw  # a line break inside a quoted field is data, not a record end
    records = raw.split(b"\r\n")
    assert records[-1] == b""  # the file ends with CRLF
    assert all(not r.endswith(b"\r") for r in records)
    assert b'\r\n"",' in raw  # empty string is quoted ...
    assert b"\r\n,1," not in raw
    assert raw.split(b"\r\n")[-2].startswith(b",")  # ... a null is an empty field


def test_bom_only_when_asked(tmp_path: Path) -> None:
    render(tmp_path / "plain.csv", [make_batch(["x"])])
    render(tmp_path / "bom.csv", [make_batch(["x"])], csv_bom=True)
    assert not (tmp_path / "plain.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    with_bom = (tmp_path / "bom.csv").read_bytes()
    assert with_bom.startswith(b"\xef\xbb\xbfCustomer name")
    assert with_bom[3:] == (tmp_path / "plain.csv").read_bytes()
    assert next(csv.reader(io.StringIO(with_bom.decode("utf-8-sig"))))[0] == "Customer name"


def test_formula_injection_is_neutralised_but_numbers_stay_numbers(tmp_path: Path) -> None:
    hostile = ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx", "\nx", "fine"]
    path = tmp_path / "r.csv"
    render(path, [make_batch(hostile)], make_ctx(column_labels={"name": '=HYPERLINK("http://e.x")'}))
    rows = read_rows(path)
    assert rows[0][0] == '\'=HYPERLINK("http://e.x")'
    assert [r[0] for r in rows[1:]] == ["'" + h for h in hostile[:-1]] + ["fine"]
    assert rows[1][1] == "-5"
    assert rows[1][4] == "-3.20"


def test_zone_aware_timestamps_are_written_in_their_zone_with_offset(tmp_path: Path) -> None:
    schema = pa.schema([("at", pa.timestamp("s", tz="Europe/London"))])
    path = tmp_path / "tz.csv"
    writer = open_writer("csv", path, schema, make_ctx())
    moment = datetime(2024, 7, 1, 8, 0, tzinfo=UTC)
    writer.write_batch(pa.record_batch([pa.array([moment], schema.field("at").type)], schema=schema))
    writer.close()
    assert read_rows(path)[1] == ["2024-07-01 09:00:00+0100"]


def test_truncation_note_is_a_full_width_last_row(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    render(path, [make_batch(["a", "b"])], make_ctx(truncated_at=2))
    rows = read_rows(path)
    assert rows[-1] == ["# truncated: first 2 rows shown"] + [""] * 7
    assert {len(r) for r in rows} == {8}
    assert len(rows) == 4


def test_many_batches_stream_into_one_file(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    batches = [make_batch([f"row {i}-{j}" for j in range(20)]) for i in range(50)]
    assert render(path, batches) == 1000
    rows = read_rows(path)
    assert len(rows) == 1001
    assert rows[-1][0] == "row 49-19"


def test_same_input_gives_identical_bytes(tmp_path: Path) -> None:
    render(tmp_path / "a.csv", [make_batch(NAMES)], make_ctx(truncated_at=8))
    render(tmp_path / "b.csv", [make_batch(NAMES)], make_ctx(truncated_at=8))
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_dictionary_and_large_string_columns(tmp_path: Path) -> None:
    schema = pa.schema([("d", pa.dictionary(pa.int32(), pa.string())), ("l", pa.large_string())])
    batch = pa.record_batch(
        [pa.array(["=x", "y", None]).dictionary_encode(), pa.array(["-1", None, "z"], pa.large_string())],
        schema=schema,
    )
    path = tmp_path / "r.csv"
    writer = open_writer("csv", path, schema, make_ctx())
    writer.write_batch(batch)
    assert writer.close() == 3
    assert read_rows(path)[1:] == [["'=x", "'-1"], ["y", ""], ["", "z"]]


def test_empty_result_has_the_header_only(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    assert render(path, []) == 0
    assert read_rows(path) == [["Customer name", "Quantity", "small", "price", "amount", "ok", "day", "at"]]


def test_format_tables_agree() -> None:
    assert set(FORMATS) == set(MEDIA_TYPES) == set(EXTENSIONS) == {"csv", "xlsx", "pdf"}
    assert MEDIA_TYPES["csv"].startswith("text/csv")


@pytest.mark.parametrize(
    ("fmt", "schema", "ctx", "field"),
    [
        ("docx", SCHEMA, make_ctx(), "format"),
        ("csv", pa.schema([]), make_ctx(), "schema"),
        ("csv", pa.schema([("l", pa.list_(pa.int64()))]), make_ctx(), "schema"),
        ("csv", SCHEMA, make_ctx(generated_at=datetime(2024, 5, 1, 9, 0)), "generated_at"),
        ("xlsx", SCHEMA, make_ctx(chart=ChartData("t", "c", "v", ["a", "b"], [1.0])), "chart"),
    ],
)
def test_bad_input_is_a_definition_error(
    tmp_path: Path, fmt: str, schema: pa.Schema, ctx: RenderContext, field: str
) -> None:
    with pytest.raises(DefinitionError) as raised:
        open_writer(fmt, tmp_path / "x", schema, ctx)
    assert raised.value.field == field
    assert not (tmp_path / "x").exists()
