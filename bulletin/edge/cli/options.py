"""Small CLI helpers: ``--filter FIELD=VALUE`` and ``--param KEY=VALUE`` parsing, and process environment overrides."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from bulletin.errors import QueryError

if TYPE_CHECKING:
    from bulletin.models import Filter

_SYMBOLIC = re.compile(r"^(?P<field>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>!=|>=|<=|==|=|>|<)\s*(?P<value>.*)$", re.S)
_NAMED = re.compile(r"^(?P<field>[A-Za-z_][A-Za-z0-9_]*)\s+(?P<op>[a-z_]+)\s+(?P<value>.*)$", re.S)
_LIST_OPS = {"is_one_of", "is_not_one_of"}


def parse_filter(text: str) -> Filter:
    """``region=EMEA``, ``amount>=100``, or ``region is_one_of EMEA,APAC`` (a comma list for list operators)."""
    from bulletin.models import OPERATOR_ALIASES, Filter  # pydantic models: only for the commands that filter

    match = _SYMBOLIC.match(text) or _NAMED.match(text)
    if not match:
        raise QueryError(f"bad filter {text!r}: use FIELD=VALUE, FIELD>=VALUE or 'FIELD is_one_of A,B'")
    op = OPERATOR_ALIASES.get(match["op"], match["op"])
    value: Any = match["value"]
    if op in _LIST_OPS:
        value = [v.strip() for v in value.split(",") if v.strip()]
    try:
        return Filter(field=match["field"], op=op, value=value)
    except ValueError as exc:
        raise QueryError(f"bad filter {text!r}: unknown operator {match['op']!r}") from exc


def parse_params(items: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise QueryError(f"bad parameter {item!r}: use KEY=VALUE")
        params[key.strip()] = value
    return params


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for this process and restore them afterwards."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
