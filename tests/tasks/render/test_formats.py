"""Every format in the one list (``bulletin.models.FORMATS``) has a media type, an extension and its own writer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

import tasks.render
from bulletin.models import FORMATS
from tasks.render import EXTENSIONS, MEDIA_TYPES, RenderContext, open_writer

SCHEMA = pa.schema([("region", pa.string()), ("amount", pa.int64())])
CTX = RenderContext(
    report_id="weekly-sales",
    title="Weekly sales",
    description="",
    recipient="Ana Lima <ana@example.com>",
    scope="region = 'EU'",
    generated_at=datetime(2026, 7, 1, 9, 0, tzinfo=UTC),
    timezone="UTC",
)


def test_the_renderers_use_the_one_list() -> None:
    assert tasks.render.FORMATS is FORMATS
    assert set(MEDIA_TYPES) == set(EXTENSIONS) == set(FORMATS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_opens_its_own_writer(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / f"report{EXTENSIONS[fmt]}"
    writer = open_writer(fmt, path, SCHEMA, CTX)
    writer.write_batch(pa.record_batch([pa.array(["EU"]), pa.array([3])], schema=SCHEMA))
    assert writer.close() == 1
    assert type(writer).__name__.lower() == f"{fmt}writer"
    assert path.stat().st_size > 0
