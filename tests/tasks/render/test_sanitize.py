"""The pure sanitising helpers, value by value and over Arrow arrays (which must agree)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pyarrow as pa
import pypdf
import pytest
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.platypus import Paragraph, SimpleDocTemplate

from tasks.render.sanitize import (
    TRUNCATION_MARKER,
    XLSX_CELL_LIMIT,
    escape_markup,
    generated_label,
    neutralize_formula,
    neutralize_formula_array,
    plain_line,
    plain_line_array,
    remove_xlsx_illegal,
    remove_xlsx_illegal_array,
    sanitize_xlsx_text,
    sanitize_xlsx_text_array,
    truncate_text,
    truncate_text_array,
    utf16_length,
)

INJECTIONS = ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx", "\nx"]
HARMLESS = ["", "ok", "1+1=2", " =1", "é=", "'=already", "a-b"]


@pytest.mark.parametrize("text", INJECTIONS)
def test_formula_triggers_get_a_quote(text: str) -> None:
    assert neutralize_formula(text) == "'" + text


@pytest.mark.parametrize("text", HARMLESS)
def test_harmless_text_is_unchanged(text: str) -> None:
    assert neutralize_formula(text) == text


@pytest.mark.parametrize("dtype", [pa.string(), pa.large_string()])
def test_array_neutralisation_agrees_with_scalar(dtype: pa.DataType) -> None:
    values = [*INJECTIONS, *HARMLESS, None]
    result = neutralize_formula_array(pa.array(values, dtype))
    assert result.type == dtype
    assert result.to_pylist() == [None if v is None else neutralize_formula(v) for v in values]


def test_array_neutralisation_without_hits_returns_the_same_array() -> None:
    values = pa.array(HARMLESS)
    assert neutralize_formula_array(values) is values


def test_xlsx_illegal_characters_are_removed_and_legal_ones_kept() -> None:
    text = "a\x00b\x08c\x0bd\x0ce\x1ff\ufffeg\uffffh\ti\nj\rk é 😀"
    assert remove_xlsx_illegal(text) == "abcdefgh\ti\nj\rk é 😀"
    assert remove_xlsx_illegal_array(pa.array([text, None])).to_pylist() == [remove_xlsx_illegal(text), None]


def test_truncation_counts_utf16_units_and_adds_the_marker() -> None:
    long_text = "😀" * XLSX_CELL_LIMIT  # 2 UTF-16 units each
    cut = truncate_text(long_text)
    assert cut.endswith(TRUNCATION_MARKER)
    assert utf16_length(cut) <= XLSX_CELL_LIMIT
    assert truncate_text("x" * XLSX_CELL_LIMIT) == "x" * XLSX_CELL_LIMIT
    over = truncate_text("x" * (XLSX_CELL_LIMIT + 1))
    assert len(over) == XLSX_CELL_LIMIT
    assert over.endswith(TRUNCATION_MARKER)


def test_array_truncation_agrees_with_scalar() -> None:
    values = ["short", "y" * 40_000, None, "é" * 20_000]
    assert truncate_text_array(pa.array(values)).to_pylist() == [
        None if v is None else truncate_text(v) for v in values
    ]


def test_xlsx_text_is_cleaned_before_neutralised_and_truncated_last() -> None:
    assert sanitize_xlsx_text("\x00=1+1") == "'=1+1"
    cut = sanitize_xlsx_text("=" * 40_000)
    assert cut.startswith("'=")
    assert len(cut) == XLSX_CELL_LIMIT
    assert cut.endswith(TRUNCATION_MARKER)
    values = ["\x00=1+1", "=" * 40_000, "ok", None]
    assert sanitize_xlsx_text_array(pa.array(values)).to_pylist() == [
        None if v is None else sanitize_xlsx_text(v) for v in values
    ]


def test_escape_markup_escapes_tags_entities_and_quotes() -> None:
    assert escape_markup('<font size=99>x</font> <a href="http://e.x">y</a> &amp;') == (
        "&lt;font size=99&gt;x&lt;/font&gt; &lt;a href=&quot;http://e.x&quot;&gt;y&lt;/a&gt; &amp;amp;"
    )


def test_escaped_markup_renders_literally_in_a_paragraph() -> None:
    hostile = '<font size=99>x</font> <a href="http://evil.example">click</a> &amp; <img src="/etc/passwd"/>'
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, invariant=1)
    doc.build([Paragraph(escape_markup(hostile), getSampleStyleSheet()["Normal"])])
    reader = pypdf.PdfReader(io.BytesIO(out.getvalue()))
    text = reader.pages[0].extract_text()
    assert "<font size=99>x</font>" in text
    assert "&amp;" in text
    assert "/Annots" not in reader.pages[0]  # no link was made


def test_plain_line_flattens_control_characters() -> None:
    assert plain_line("a\nb\tc\rd\x00e\x85f") == "a b c d e f"
    assert plain_line_array(pa.array(["a\nb", None, "ok"])).to_pylist() == ["a b", None, "ok"]


def test_generated_label_names_zone_and_offset() -> None:
    london = datetime(2024, 7, 1, 9, 30, tzinfo=ZoneInfo("Europe/London"))
    assert generated_label(london, "Europe/London") == "2024-07-01 09:30:00 BST (Europe/London, UTC+01:00)"
    utc = datetime(2024, 1, 1, tzinfo=UTC)
    assert generated_label(utc, "UTC") == "2024-01-01 00:00:00 UTC (UTC, UTC+00:00)"
