"""The one templating rule of report definitions, kept deliberately tiny.

A value that is exactly ``{{ path }}`` or ``{{ path + 3d }}`` / ``{{ path - 6d }}`` is replaced by the value at
``path`` in the context (``recipient.<attribute>``, ``recipient.ref``, ``params.<name>``), keeping its type, so a
list attribute stays a list for ``is_one_of``. There is no string interpolation and no expression language: the
result is always bound as a query parameter, never spliced into SQL or markup.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

_EXPR = re.compile(
    r"^\{\{\s*(?P<path>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+)"
    r"\s*(?:(?P<sign>[+-])\s*(?P<days>\d{1,4})d)?\s*\}\}$"
)
_RELATIVE = re.compile(r"^(?P<base>today|yesterday)(?:\s*(?P<sign>[+-])\s*(?P<days>\d{1,4})d)?$")


class TemplateError(ValueError):
    """A template names something the context does not have."""


def is_template(value: object) -> bool:
    return isinstance(value, str) and value.lstrip().startswith("{{")


def _match(value: str) -> re.Match[str]:
    match = _EXPR.match(value.strip())
    if not match:
        raise TemplateError(
            f"bad template {value!r}: use '{{{{ recipient.<attribute> }}}}' or '{{{{ params.<name> }}}}'"
        )
    return match


def template_path(value: str) -> list[str]:
    """The path a template value names (``["recipient", "region"]``), or ``TemplateError`` when it is malformed."""
    return _match(value)["path"].split(".")


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Resolve one value. Non-template values pass through unchanged; lists are resolved item by item."""
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if not is_template(value):
        return value
    match = _match(value)
    current: Any = context
    for part in match["path"].split("."):
        if not isinstance(current, dict) or part not in current:
            raise TemplateError(f"template {value!r} names {match['path']!r}, which is not set")
        current = current[part]
    if match["days"]:
        if not isinstance(current, date):
            raise TemplateError(f"template {value!r} adds days to a value that is not a date")
        delta = timedelta(days=int(match["days"]))
        current = current + delta if match["sign"] == "+" else current - delta
    return current


def resolve_date(value: object, today: date) -> date:
    """A date parameter: ``YYYY-MM-DD``, ``today``, ``yesterday``, optionally ``- Nd`` / ``+ Nd``."""
    if isinstance(value, date):
        return value
    text = str(value).strip().lower()
    match = _RELATIVE.match(text)
    if match:
        base = today if match["base"] == "today" else today - timedelta(days=1)
        days = int(match["days"] or 0)
        return base + timedelta(days=days) if match["sign"] == "+" else base - timedelta(days=days)
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise TemplateError(f"{value!r} is not a date: use YYYY-MM-DD, 'today' or 'yesterday - 6d'") from exc
