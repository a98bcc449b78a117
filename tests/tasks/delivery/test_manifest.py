"""The run's Prefect artifacts say per file and channel what happened, so a partial recipient reads as one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bulletin.models import Artifact, Delivery, DeliveryStatus, Manifest, RunStatus
from tasks.delivery.manifest import delivery_rows, list_manifests, manifest_file, save_manifest, summary_markdown

SHA = "ab" * 32


def manifest() -> Manifest:
    now = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    pdf = Artifact(format="pdf", uri="s3://bucket/reports/weekly/dave.pdf", sha256=SHA, bytes=1234, rows=10)
    refused = Artifact.model_validate(
        {**pdf.model_dump(), "channel": "email", "uri": "", "outcome": "failed", "note": "554 refused"}
    )
    return Manifest(
        report_id="weekly",
        run_id="run1",
        started_at=now,
        finished_at=now,
        status=RunStatus.PARTIAL,
        deliveries=[
            Delivery(recipient="dave", status=DeliveryStatus.PARTIAL, artifacts=[pdf, refused], error="email: 554"),
            Delivery(recipient="erin", status=DeliveryStatus.FAILED, error="no value for region"),
        ],
    )


def test_the_table_has_a_row_per_file_and_channel_with_its_outcome() -> None:
    rows = delivery_rows(manifest())
    assert [(r["recipient"], r["status"], r["channel"], r["outcome"], r["error"]) for r in rows] == [
        ("dave", "PARTIAL", "s3", "sent", ""),
        ("dave", "PARTIAL", "email", "failed", "554 refused"),
        ("erin", "FAILED", "", "", "no value for region"),
    ]
    assert rows[0]["key"] == "s3://bucket/reports/weekly/dave.pdf"


def test_the_summary_counts_partial_recipients_and_says_what_they_have() -> None:
    text = summary_markdown(manifest())
    assert "0 delivered, 1 partial, 0 skipped, 1 failed, 2 recipient(s)" in text
    assert "| dave | PARTIAL | s3: pdf | email: 554 |" in text
    assert "| erin | FAILED | nothing | no value for region |" in text


def test_a_manifest_is_saved_where_the_one_path_rule_says(tmp_path: Path) -> None:
    assert manifest_file(tmp_path, "weekly", "run1") == tmp_path / "weekly" / "run1.json"
    saved = save_manifest(tmp_path, manifest())
    assert saved == manifest_file(tmp_path, "weekly", "run1") and saved.is_file()
    assert [m.run_id for m in list_manifests(tmp_path, report_id="weekly")] == ["run1"]
