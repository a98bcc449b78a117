"""The spreadsheet formula rule for one Python string (OWASP "CSV injection"), apart from the Arrow kernels of
:mod:`tasks.render.sanitize` so that a caller with one value at a time (``bulletin query``) need not import
``pyarrow.compute``. :mod:`tasks.render.sanitize` re-exports both names; the array form lives there.
"""

from __future__ import annotations

#: A text cell starting with one of these is read as a formula (or as a formula's continuation) by Excel,
#: LibreOffice or Google Sheets: OWASP "CSV injection".
FORMULA_TRIGGERS = "=+-@\t\r\n"


def neutralize_formula(text: str) -> str:
    """Prefix ``'`` to text a spreadsheet would otherwise evaluate, so it shows as typed."""
    if text and text[0] in FORMULA_TRIGGERS:
        return "'" + text
    return text
