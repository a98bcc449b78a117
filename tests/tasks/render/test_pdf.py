"""PDF renderer, read back with pypdf."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pypdf
import pytest
from reportlab.pdfbase.pdfmetrics import stringWidth

from tasks.render import ChartData, RenderContext, open_writer
from tasks.render.pdf import ELLIPSIS, clip_text, table_fonts, wrap_text

SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("qty", pa.int64()),
        ("price", pa.float64()),
        ("day", pa.date32()),
        ("at", pa.timestamp("us", tz="UTC")),
    ]
)
MARKUP = ["<font size=99>x</font>", '<a href="http://e.x">y</a>', "&amp; &lt;", "<img src=x/>"]


def make_ctx(**changes: object) -> RenderContext:
    base: dict[str, object] = {
        "report_id": "weekly-sales",
        "title": "Sales <font size=99>x</font> & co",
        "description": 'Orders by region <a href="http://evil.example">here</a>\nsecond line',
        "recipient": "Ana Lima <ana@example.com>",
        "scope": "region = 'EU' AND team = 'North'",
        "generated_at": datetime(2024, 5, 1, 9, 0, tzinfo=ZoneInfo("Europe/London")),
        "timezone": "Europe/London",
        "column_labels": {"qty": "Quantity"},
        "chart": ChartData("Amount by city", "City", "Amount", ["London", "Lisbon <b>"], [3.0, 1.5]),
    }
    base.update(changes)
    return RenderContext(**base)  # type: ignore[arg-type]


def make_batch(names: Sequence[str | None]) -> pa.RecordBatch:
    n = len(names)
    return pa.record_batch(
        [
            pa.array(names, pa.string()),
            pa.array([-5, *range(1, n)], pa.int64()),
            pa.array([0.1 + 0.2] + [1234.5] * (n - 1), pa.float64()),
            pa.array([date(2024, 2, 29)] * n, pa.date32()),
            pa.array([datetime(2024, 1, 2, 3, 4, 5)] * n, SCHEMA.field("at").type),
        ],
        schema=SCHEMA,
    )


def render(path: Path, batches: list[pa.RecordBatch], ctx: RenderContext | None = None) -> int:
    writer = open_writer("pdf", path, SCHEMA, ctx or make_ctx())
    for batch in batches:
        writer.write_batch(batch)
    return writer.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> pypdf.PdfReader:
    path = tmp_path_factory.mktemp("pdf") / "r.pdf"
    names = [*MARKUP, "line\nbreak", "x" * 500, None] + [f"row {i}" for i in range(143)]
    assert render(path, [make_batch(names)], make_ctx(truncated_at=150)) == 150
    return pypdf.PdfReader(path)


def test_every_page_says_page_n_of_m(report: pypdf.PdfReader) -> None:
    total = len(report.pages)
    assert total >= 3
    for number, page in enumerate(report.pages, start=1):
        assert re.search(rf"Page {number} of\s*{total}\b", page.extract_text())


def test_first_page_has_the_heading_block_and_chart(report: pypdf.PdfReader) -> None:
    first = report.pages[0].extract_text()
    assert "Sales <font size=99>x</font> & co" in first
    assert 'Orders by region <a href="http://evil.example">here</a>' in first
    assert "Ana Lima <ana@example.com>" in first
    assert "region = 'EU' AND team = 'North'" in first
    assert "2024-05-01 09:00:00 BST (Europe/London, UTC+01:00)" in first
    assert re.search(r"Rows:\s*150", first)
    assert "only the first 150 rows" in first
    assert "Amount by city" in first
    assert "Lisbon <b>" in first


def test_header_repeats_and_values_show(report: pypdf.PdfReader) -> None:
    for page in report.pages[1:]:
        text = page.extract_text()
        assert "Quantity" in text
        assert "price" in text
    everything = "\n".join(page.extract_text() for page in report.pages)
    assert "row 142" in everything
    assert "-5" in everything
    assert "2024-02-29" in everything
    assert "0.3\n" in everything
    assert "0.30000000000000004" not in everything
    assert "2024-01-02 03:04:05" in everything


def test_markup_in_cells_shows_literally(report: pypdf.PdfReader) -> None:
    first = report.pages[0].extract_text()
    for value in MARKUP:
        assert value in first
    assert "line break" in first
    assert all("/Annots" not in page for page in report.pages)  # no link was made from user text


def test_long_cells_are_clipped_with_an_ellipsis(report: pypdf.PdfReader) -> None:
    first = report.pages[0].extract_text()
    assert "x" * 500 not in first
    assert re.search("x{5,}" + ELLIPSIS, first)


def test_metadata_and_dates_come_from_the_context(report: pypdf.PdfReader) -> None:
    assert report.metadata is not None
    assert report.metadata.title == "Sales <font size=99>x</font> & co"
    assert str(report.metadata["/CreationDate"]) == "D:20240501090000+01'00'"


def test_same_input_gives_identical_bytes(tmp_path: Path) -> None:
    render(tmp_path / "a.pdf", [make_batch(["a", "b", "ünï"])])
    render(tmp_path / "b.pdf", [make_batch(["a", "b", "ünï"])])
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()


def test_many_batches_stream_across_pages(tmp_path: Path) -> None:
    path = tmp_path / "many.pdf"
    assert render(path, [make_batch([f"b{i}-{j}" for j in range(25)]) for i in range(12)], make_ctx(chart=None)) == 300
    reader = pypdf.PdfReader(path)
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert "b0-0" in text
    assert "b11-24" in text
    assert re.search(rf"Page {len(reader.pages)} of\s*{len(reader.pages)}", reader.pages[-1].extract_text())


def test_empty_result_is_one_page(tmp_path: Path) -> None:
    path = tmp_path / "empty.pdf"
    assert render(path, []) == 0
    reader = pypdf.PdfReader(path)
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    assert "No rows." in text
    assert re.search(r"Page 1 of\s*1", text)


def test_clip_and_wrap_stay_within_width() -> None:
    font = table_fonts()[0]
    clipped = clip_text("word " * 100, 120, font, 8)
    assert clipped.endswith(ELLIPSIS)
    assert stringWidth(clipped, font, 8) <= 120
    assert clip_text("short", 120, font, 8) == "short"
    lines = wrap_text("word " * 200, 200, font, 9, 3)
    assert len(lines) == 3
    assert lines[-1].endswith(ELLIPSIS)
    assert all(stringWidth(line, font, 9) <= 200 for line in lines)


def test_numbers_too_wide_for_their_column_show_hashes(tmp_path: Path) -> None:
    schema = pa.schema([("n", pa.int64()), ("note", pa.string())])
    values = [1] * 300 + [10**18]  # the width comes from the first rows; the big one arrives later
    batch = pa.record_batch([pa.array(values), pa.array(["x" * 80] * len(values))], schema=schema)
    path = tmp_path / "wide.pdf"
    writer = open_writer("pdf", path, schema, make_ctx(chart=None))
    writer.write_batch(batch.slice(0, 300))
    writer.write_batch(batch.slice(300))
    assert writer.close() == 301
    last = pypdf.PdfReader(path).pages[-1].extract_text()
    assert "###" in last
    assert "1000000000" not in last


def test_the_period_is_under_the_title_and_on_every_page(tmp_path: Path) -> None:
    path = tmp_path / "period.pdf"
    render(path, [make_batch([f"row {i}" for i in range(150)])], make_ctx(period="25 – 31 Oct 2026"))
    pages = pypdf.PdfReader(path).pages
    assert len(pages) >= 3
    first = pages[0].extract_text()
    assert "25 – 31 Oct 2026" in first and first.index("25 – 31 Oct 2026") < first.index("Prepared for")
    for number, page in enumerate(pages, start=1):
        text = page.extract_text()
        assert "Sales <font size=99>x</font> & co, 25 – 31 Oct 2026" in text, f"page {number} lacks the period"
        assert re.search(rf"Page {number} of\s*{len(pages)}\b", text)
    assert "Oct 2026" not in pypdf.PdfReader(render_plain(tmp_path)).pages[0].extract_text(), "none made up"


def render_plain(tmp_path: Path) -> Path:
    path = tmp_path / "plain.pdf"
    render(path, [make_batch(["a", "b"])], make_ctx())
    return path


def test_no_rows_is_a_sentence_with_no_table_header_and_no_empty_chart(tmp_path: Path) -> None:
    path = tmp_path / "empty.pdf"
    empty_chart = ChartData("Amount by city", "City", "Amount", [], [])
    ctx = make_ctx(chart=empty_chart, no_rows="No sales lines for EU (25 – 31 Oct 2026).")
    assert render(path, [make_batch(["x", "y"]).slice(0, 0)], ctx) == 0
    (page,) = pypdf.PdfReader(path).pages
    text = page.extract_text()
    assert "No sales lines for EU (25 – 31 Oct 2026)." in text
    assert "Quantity" not in text and "Amount by city" not in text, "no header of an empty table, no empty chart"
