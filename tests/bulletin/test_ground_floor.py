"""The ground floor is written once: the format list, the clock and the store's helpers each have one home.

A second copy is how a new format reached the report definitions but not the manifests, so these tests read the
sources (bulletin/, tasks/, flows/) and fail on any copy outside the one module that owns the thing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from bulletin.edge.api.jobs import JobRequest
from bulletin.models import FORMATS, Artifact
from bulletin.reports import ReportDefinition
from bulletin.triggers import Action

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for folder in ("bulletin", "tasks", "flows") for p in (ROOT / folder).rglob("*.py"))

_FORMAT = r"""["'](?:pdf|csv|xlsx)["']"""
#: Each thing, the one module allowed to spell it, and the spellings of a copy.
COPIES = {
    "the format list": (
        "bulletin/models.py",
        [rf"Literal\[\s*{_FORMAT}", rf"{_FORMAT}\s*[:,]\s*(?:[^,\n]*,\s*)?{_FORMAT}"],
    ),
    "the clock": (
        "bulletin/clock.py",
        [r"def _?utc_now\b", r"^\s*Clock\s*=", r"Callable\[\[\],\s*datetime\]", r"lambda:\s*datetime\.now"],
    ),
    "the aware-datetime check": ("bulletin/clock.py", [r"utcoffset\(\)\s+is\s+None", r"raise .*timezone-aware"]),
    "the store's helpers": (
        "bulletin/store/base.py",
        [r"def _?aware\b", r"def _?truncate(_utf8)?\b", r"\bMetaData\(", r"class UTCDateTime\b"],
    ),
}


def _copies(owner: str, patterns: list[str]) -> list[str]:
    found = []
    for path in SOURCES:
        relative = path.relative_to(ROOT).as_posix()
        if relative == owner or "/migrations/" in relative:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(re.search(pattern, line) for pattern in patterns):
                found.append(f"{relative}:{number}: {line.strip()}")
    return found


@pytest.mark.parametrize("thing", sorted(COPIES))
def test_written_once(thing: str) -> None:
    owner, patterns = COPIES[thing]
    assert _copies(owner, patterns) == [], f"{thing} belongs in {owner} only"


def _enum(model: type[BaseModel], name: str) -> Any:
    schema = model.model_json_schema()
    field = schema["properties"][name]
    field = field.get("items", field)
    if "anyOf" in field:  # optional lists
        field = next(option for option in field["anyOf"] if option.get("type") == "array")["items"]
    return field["enum"]


@pytest.mark.parametrize(
    ("model", "name"),
    [(ReportDefinition, "formats"), (Action, "formats"), (JobRequest, "formats"), (Artifact, "format")],
)
def test_every_format_field_takes_the_one_list(model: type[BaseModel], name: str) -> None:
    assert FORMATS == ("pdf", "csv", "xlsx")
    assert _enum(model, name) == list(FORMATS)
