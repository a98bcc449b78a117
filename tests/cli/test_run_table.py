"""`bulletin run`'s table, summary line and progress bar say per channel what happened to a partial recipient."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from rich.console import Console

from bulletin import progress
from bulletin.edge.cli import delivery
from bulletin.models import Artifact, Delivery, DeliveryStatus, Manifest, RunStatus

SHA = "ab" * 32


def manifest() -> Manifest:
    now = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    pdf = Artifact(format="pdf", uri="s3://bucket/reports/weekly/dave.pdf", sha256=SHA, bytes=1234, rows=10)
    refused = Artifact.model_validate(
        {**pdf.model_dump(), "channel": "email", "uri": "", "outcome": "failed", "note": "554 refused"}
    )
    dave = Delivery(recipient="dave", status=DeliveryStatus.PARTIAL, artifacts=[pdf, refused], error="email: 554")
    return Manifest(
        report_id="weekly", run_id="run1", started_at=now, finished_at=now, status=RunStatus.PARTIAL, deliveries=[dave]
    )


def test_the_table_lists_each_channel_with_its_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(delivery, "console", Console(file=out, width=200))
    delivery._print([manifest()], as_json=False)
    text = out.getvalue()
    row = next(line for line in text.splitlines() if "dave" in line)
    assert "partial" in row and "s3 (sent): pdf; email (failed): pdf" in row and "email: 554" in row
    assert "weekly: PARTIAL (0 delivered, 1 partial, 0 skipped, 0 failed), run run1" in text


def test_the_progress_bar_says_partial_and_failed_recipients_as_they_end(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(delivery, "console", Console(file=out, width=200, force_terminal=True))
    with delivery._progress_bar(True):
        progress.notify("weekly", "planned", "3")
        progress.notify("weekly", "DELIVERED", "carol")
        progress.notify("weekly", "PARTIAL", "dave")
        progress.notify("weekly", "FAILED", "erin")
    assert "weekly (1 partial, 1 failed)" in out.getvalue()
