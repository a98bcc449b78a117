"""Pure helpers that make user data safe for a spreadsheet cell or a PDF page.

Each rule comes twice: once for one Python string (headers, titles, the summary sheet) and once for a whole Arrow
string array, in vectorised ``pyarrow.compute`` kernels, because a per-value Python loop over a million rows is
slower than writing the file. The array forms accept ``string`` and ``large_string`` arrays and keep nulls.

Two display rules every renderer shares live here too, so the formats cannot drift apart: which column types a
report accepts and what each becomes (:func:`column_kind`), and how the generation time is printed
(:func:`generated_label`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal
from xml.sax.saxutils import escape

import pyarrow as pa
import pyarrow.compute as pc

from bulletin.errors import DefinitionError

# Re-exported: the one-string rule lives apart so that its callers need not import pyarrow.compute.
from tasks.render.formula import FORMULA_TRIGGERS as FORMULA_TRIGGERS
from tasks.render.formula import neutralize_formula as neutralize_formula

#: What a column's values become in every format; anything else is refused before a file is opened.
Kind = Literal["text", "number", "float", "bool", "date", "datetime", "null"]
#: The most characters one Excel cell holds.
XLSX_CELL_LIMIT = 32_767
TRUNCATION_MARKER = "…[truncated]"

# XML 1.0 cannot hold C0 controls other than tab, LF and CR, nor U+FFFE/U+FFFF; Excel refuses such files.
_XLSX_ILLEGAL = "[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]"
XLSX_ILLEGAL_RE2 = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x{FFFE}\x{FFFF}]"
_XLSX_ILLEGAL_RE = re.compile(_XLSX_ILLEGAL)
# Drawn text has no line breaks or tabs: a control character would show as a missing glyph or be dropped.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_RE2 = r"[\x00-\x1F\x7F-\x{9F}]"


def neutralize_formula_array(values: pa.Array) -> pa.Array:
    """:func:`neutralize_formula` over a string array, nulls kept.

    Looking up each value's first character and rewriting only the matches is about twice as fast as one regex
    replace over every value, and most values match nothing.
    """
    first = pc.utf8_slice_codeunits(values, 0, 1)
    hits = pc.is_in(first, value_set=pa.array(list(FORMULA_TRIGGERS), first.type))
    if not pc.any(hits).as_py():
        return values
    quote, nothing = pa.scalar("'", values.type), pa.scalar("", values.type)
    quoted = pc.binary_join_element_wise(quote, pc.filter(values, hits), nothing)
    return pc.replace_with_mask(values, hits, quoted)


def remove_xlsx_illegal(text: str) -> str:
    """Drop the characters an XLSX file cannot hold (C0 controls other than tab/LF/CR, U+FFFE, U+FFFF)."""
    return _XLSX_ILLEGAL_RE.sub("", text)


def remove_xlsx_illegal_array(values: pa.Array) -> pa.Array:
    """:func:`remove_xlsx_illegal` over a string array; skips the rewrite when nothing matches."""
    return _replace_array(values, XLSX_ILLEGAL_RE2, "")


def utf16_length(text: str) -> int:
    """Length as Excel counts it: in UTF-16 code units, so a character outside the BMP counts twice."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def truncate_text(text: str, limit: int = XLSX_CELL_LIMIT, marker: str = TRUNCATION_MARKER) -> str:
    """Cut ``text`` to at most ``limit`` UTF-16 code units, ending with ``marker`` when anything was cut."""
    if len(text) <= limit // 2 or utf16_length(text) <= limit:
        return text
    budget = 2 * (limit - utf16_length(marker))
    # Cutting the UTF-16 bytes may split a surrogate pair: "ignore" drops the orphaned half.
    return text.encode("utf-16-le")[:budget].decode("utf-16-le", "ignore") + marker


def truncate_text_array(values: pa.Array, limit: int = XLSX_CELL_LIMIT, marker: str = TRUNCATION_MARKER) -> pa.Array:
    """:func:`truncate_text` over a string array.

    A value of at most ``limit`` UTF-8 bytes has at most ``limit`` UTF-16 units, so only the rare longer values
    go through Python.
    """
    too_long = pc.fill_null(pc.greater(pc.binary_length(values), limit), False)
    if not pc.any(too_long).as_py():
        return values
    cut = [truncate_text(v, limit, marker) for v in pc.filter(values, too_long).to_pylist()]
    return pc.replace_with_mask(values, too_long, pa.array(cut, values.type))


def sanitize_xlsx_text(text: str) -> str:
    """Everything an XLSX text cell needs, in the order that keeps each step honest.

    Illegal characters go first so that ``"\\x00=1+1"`` is still neutralised; truncation comes last so the cell
    stays within Excel's limit including the added quote.
    """
    return truncate_text(neutralize_formula(remove_xlsx_illegal(text)))


def sanitize_xlsx_text_array(values: pa.Array) -> pa.Array:
    """:func:`sanitize_xlsx_text` over a string array."""
    return truncate_text_array(neutralize_formula_array(remove_xlsx_illegal_array(values)))


def escape_markup(text: str) -> str:
    """Escape text for ReportLab's ``Paragraph`` mini-markup, which would otherwise act on ``<a href>``,
    ``<img>``, ``<font>`` and entities found in user data."""
    return escape(text, {'"': "&quot;", "'": "&#39;"})


def plain_line(text: str) -> str:
    """One drawable line: control characters (line breaks and tabs included) become spaces."""
    return _CONTROL_RE.sub(" ", text)


def plain_line_array(values: pa.Array) -> pa.Array:
    """:func:`plain_line` over a string array; skips the rewrite when nothing matches."""
    return _replace_array(values, _CONTROL_RE2, " ")


def _replace_array(values: pa.Array, pattern: str, replacement: str) -> pa.Array:
    """Each match of the RE2 ``pattern`` replaced; the array itself, not a copy, when nothing matches."""
    if not pc.any(pc.match_substring_regex(values, pattern)).as_py():
        return values
    return pc.replace_substring_regex(values, pattern=pattern, replacement=replacement)


def generated_label(generated_at: datetime, timezone: str) -> str:
    """When a report was made, as every format prints it: local time, zone abbreviation, IANA name and offset.

    The abbreviation alone is ambiguous (``IST``) and the offset alone hides daylight saving, so both are shown.
    """
    offset = generated_at.strftime("%z")
    offset = f"UTC{offset[:3]}:{offset[3:5]}" if offset else "UTC offset unknown"
    zone = generated_at.tzname()
    when = f"{generated_at:%Y-%m-%d %H:%M:%S}" + (f" {zone}" if zone else "")
    return f"{when} ({timezone}, {offset})"


def column_kind(dtype: pa.DataType) -> Kind:
    """How a column's values are written. Raises ``DefinitionError`` for types a cell cannot hold."""
    if pa.types.is_dictionary(dtype):
        return column_kind(dtype.value_type)
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return "text"
    if pa.types.is_integer(dtype) or pa.types.is_decimal(dtype):
        return "number"
    if pa.types.is_floating(dtype):
        return "float"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_date(dtype):
        return "date"
    if pa.types.is_timestamp(dtype):
        return "datetime"
    if pa.types.is_null(dtype):
        return "null"
    raise DefinitionError(f"a report cannot show a column of type {dtype}", field="schema")
