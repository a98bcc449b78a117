"""The chartless XLSX path: the workbook's parts made once per process and shape, filled per file, zipped by
``tasks.render.archive``; read back with python-calamine and openpyxl (two independent readers)."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pyarrow as pa
import pytest
import xlsxwriter
from python_calamine import CalamineWorkbook

from tasks.render import RenderContext, open_writer, xlsx_parts
from tasks.render import archive as archive_module
from tasks.render.archive import Archive, pack

SCHEMA = pa.schema([("name", pa.string()), ("qty", pa.int64())])


def make_ctx(**changes: object) -> RenderContext:
    base: dict[str, object] = {
        "report_id": "weekly-sales",
        "title": "Weekly sales",
        "description": "Orders by region",
        "recipient": "ana@example.com",
        "scope": "region = 'EU'",
        "generated_at": datetime(2024, 5, 1, 9, 0, tzinfo=ZoneInfo("Europe/London")),
        "timezone": "Europe/London",
    }
    base.update(changes)
    return RenderContext(**base)  # type: ignore[arg-type]


def render(path: Path, rows: int, ctx: RenderContext, truncated_at: int | None = None) -> Path:
    writer = open_writer("xlsx", path, SCHEMA, ctx)
    writer.write_batch(pa.record_batch([pa.array([f"n{i}" for i in range(rows)]), pa.array(range(rows))], SCHEMA))
    writer.close(truncated_at=truncated_at)
    return path


def summary_facts(path: Path) -> dict[str, object]:
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("Summary").to_python()
    return {str(row[0]): row[1] for row in rows if row and row[0]}


def test_each_file_gets_its_own_values_in_the_shared_parts(tmp_path: Path) -> None:
    tricky = "A & B <c> _x0041_ =1+1"
    first = render(tmp_path / "a.xlsx", 3, make_ctx(recipient="ana@example.com", title=tricky, description=""))
    # A value holding a slot word (what the template marks its places with) stays as written.
    slotted = "bulletinslot0002x"  # the document comments slot, filled after the subject
    second = render(
        tmp_path / "b.xlsx", 5, make_ctx(recipient="ben@example.com", scope=" lead\r\nx", description=slotted), 5
    )
    facts = summary_facts(first)
    assert facts["Prepared for"] == "ana@example.com"
    assert facts["Rows"] == 3
    assert "Truncated" not in facts
    assert CalamineWorkbook.from_path(str(first)).get_sheet_by_name("Summary").to_python()[0][0] == tricky
    facts = summary_facts(second)
    assert facts["Prepared for"] == "ben@example.com"
    assert facts["Scope"] == " lead\r\nx"  # the CR survives, the leading space too
    assert facts["Description"] == slotted
    assert openpyxl.load_workbook(second).properties.subject == slotted
    assert facts["Rows"] == 5
    assert "first 5 rows" in str(facts["Truncated"])
    book = openpyxl.load_workbook(first)
    assert book["Summary"]["A1"].value == tricky
    assert book.properties.title == tricky
    assert book.properties.created == datetime(2024, 5, 1, 8, 0)
    assert book["Data"].auto_filter.ref == "A1:B4"
    assert book.defined_names.get("_xlnm._FilterDatabase") is None  # a sheet-scoped name, read by the filter ref
    assert openpyxl.load_workbook(second)["Data"].auto_filter.ref == "A1:B6"
    assert CalamineWorkbook.from_path(str(second)).get_sheet_by_name("Data").to_python()[5] == ["n4", 4]


def test_the_workbook_is_made_once_per_shape_not_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []
    real = xlsxwriter.Workbook

    def counting(*args: object, **kwargs: object) -> object:
        made.append(args)
        return real(*args, **kwargs)

    xlsx_parts.workbook_template.cache_clear()
    monkeypatch.setattr(xlsxwriter, "Workbook", counting)
    for n in range(4):
        render(tmp_path / f"r{n}.xlsx", 2, make_ctx(recipient=f"r{n}@example.com"))
    assert len(made) == 1
    render(tmp_path / "cut.xlsx", 2, make_ctx(), truncated_at=2)  # another shape: its own template
    assert len(made) == 2
    assert summary_facts(tmp_path / "r3.xlsx")["Prepared for"] == "r3@example.com"


def test_files_are_no_larger_than_zipfile_made_them(tmp_path: Path) -> None:
    """Same deflate level or better: the parts re-zipped as the renderer used to (zipfile, the sheet streamed with
    ZIP64 at zlib's level 1, the rest at zipfile's default 6) make a file at least as large."""
    ours = render(tmp_path / "ours.xlsx", 20_000, make_ctx())
    before = io.BytesIO()
    with zipfile.ZipFile(ours) as made, zipfile.ZipFile(before, "w", zipfile.ZIP_DEFLATED) as old:
        assert made.testzip() is None
        for info in made.infolist():
            if info.filename == xlsx_parts.DATA_PART:
                entry = zipfile.ZipInfo(info.filename, info.date_time)
                entry.compress_type, entry._compresslevel = zipfile.ZIP_DEFLATED, 1  # type: ignore[attr-defined]
                with old.open(entry, "w", force_zip64=True) as sheet:
                    sheet.write(made.read(info))
            else:
                old.writestr(info.filename, made.read(info), compresslevel=6)
    assert ours.stat().st_size <= len(before.getvalue())


def test_archive_writes_zip64_records_a_reader_follows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the ZIP64 limit (lowered here to 100 bytes) sizes and offsets move into ZIP64 fields."""
    monkeypatch.setattr(archive_module, "_ZIP64_LIMIT", 100)
    out = io.BytesIO()
    archive = Archive(out, (2024, 5, 1, 9, 0, 0))
    archive.open_stream("big.xml")
    for n in range(50):
        archive.write(f"<row>{n}</row>".encode() * 20)
    archive.close_stream()
    archive.add("small.xml", b"<a/>" * 100)
    archive.add_packed(pack("packed.xml", b"<b/>" * 100))
    archive.close()
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as made:
        assert made.testzip() is None
        assert made.read("big.xml") == b"".join(f"<row>{n}</row>".encode() * 20 for n in range(50))
        assert made.read("packed.xml") == b"<b/>" * 100
        assert made.getinfo("small.xml").date_time == (2024, 5, 1, 9, 0, 0)


@pytest.mark.parametrize("chart", [False, True], ids=["shared-parts", "charted"])
def test_the_period_is_the_summarys_first_fact(tmp_path: Path, chart: bool) -> None:
    from tasks.render import ChartData

    drawn = ChartData("Amount by city", "City", "Amount", ["London"], [3.0]) if chart else None
    path = render(tmp_path / "p.xlsx", 2, make_ctx(period="25 – 31 Oct 2026", chart=drawn))
    facts = summary_facts(path)
    assert facts["Period"] == "25 – 31 Oct 2026"
    assert next(iter(facts)) == "Weekly sales" and list(facts)[1] == "Period", "right under the title"
    sheet = openpyxl.load_workbook(path)["Summary"]
    assert (sheet["A3"].value, sheet["B3"].value) == ("Period", "25 – 31 Oct 2026")
    assert "Period" not in summary_facts(render(tmp_path / "q.xlsx", 2, make_ctx(chart=drawn))), "none made up"


@pytest.mark.parametrize("chart", [False, True], ids=["shared-parts", "charted"])
def test_a_file_with_no_rows_says_so_on_its_summary_and_draws_no_chart(tmp_path: Path, chart: bool) -> None:
    from tasks.render import ChartData

    empty = ChartData("Amount by city", "City", "Amount", [], []) if chart else None
    ctx = make_ctx(chart=empty, no_rows="No sales lines for EU.")
    path = render(tmp_path / "e.xlsx", 0, ctx)
    assert summary_facts(path)["Note"] == "No sales lines for EU."
    assert openpyxl.load_workbook(path)["Summary"]._charts == []
    assert "Note" not in summary_facts(render(tmp_path / "f.xlsx", 1, ctx)), "only when there are no rows"
