"""The deliver-report flow against a real Prefect API (one harness per session), the demo warehouse and real
renderers: every file is reopened by an independent reader and checked row by row against the recipient's scope."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from pypdf import PdfReader
from python_calamine import CalamineWorkbook

from bulletin.demo_data import DEMO_END_DATE
from bulletin.edge.cli.delivery import run_report
from bulletin.models import DeliveryStatus, Manifest, RunStatus
from bulletin.settings import PROJECT_ROOT

pytestmark = pytest.mark.usefixtures("prefect_api")
AS_OF = {"as_of": DEMO_END_DATE.isoformat()}


def local_path(uri: str) -> Path:
    return Path(urlparse(uri).path)


def test_weekly_report_scoped_per_recipient(bulletin_env: Path) -> None:
    manifest = run_report("weekly-regional-sales", parameters=AS_OF)
    assert manifest.status is RunStatus.COMPLETED
    assert len(manifest.deliveries) >= 6
    regions_seen = set()
    for delivery in manifest.deliveries:
        assert delivery.status is DeliveryStatus.DELIVERED
        assert delivery.token_id and len(delivery.token_id) >= 16
        (group,) = delivery.secure_filters["sales"]
        (flt,) = group
        assert (flt.field, flt.op) == ("region", "=")
        region = flt.value
        regions_seen.add(region)
        by_format = {a.format: a for a in delivery.artifacts if a.channel == "s3"}
        assert set(by_format) == {"pdf", "xlsx"}
        xlsx = by_format["xlsx"]
        path = local_path(xlsx.uri)
        assert path.is_file() and path.stat().st_size == xlsx.bytes
        assert str(bulletin_env) in str(path)
        sheets = CalamineWorkbook.from_path(str(path))
        data_sheet = next(n for n in sheets.sheet_names if n.lower() != "summary")
        rows = sheets.get_sheet_by_name(data_sheet).to_python()
        header, body, totals = rows[0], rows[1:-1], rows[-1]
        assert totals[0] == "Total", "the report asks for a totals row: it closes the table"
        assert len(body) == xlsx.rows > 0
        region_col = header.index("Region")
        assert {row[region_col] for row in body} == {region}
        pdf = by_format["pdf"]
        reader = PdfReader(local_path(pdf.uri))
        first = reader.pages[0].extract_text()
        assert "Weekly regional sales" in first
        assert region in first
        last = " ".join(reader.pages[-1].extract_text().split())
        assert f"Page {len(reader.pages)} of {len(reader.pages)}" in last
        assert pdf.rows == xlsx.rows
    assert len(regions_seen) >= 6
    saved = bulletin_env / "manifests" / "weekly-regional-sales" / f"{manifest.run_id}.json"
    assert Manifest.model_validate_json(saved.read_text()) == manifest
    text = saved.read_text()
    assert "eyJ" not in text, "a manifest must never contain a token"


def test_daily_csv_only_the_accounts_rows(bulletin_env: Path) -> None:
    manifest = run_report("daily-account-orders", parameters=AS_OF, recipients=None)
    assert manifest.status is RunStatus.COMPLETED
    for delivery in manifest.deliveries:
        (artifact,) = delivery.artifacts
        account = delivery.secure_filters["orders"][0][0].value
        text = local_path(artifact.uri).read_text(encoding="utf-8")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == artifact.rows > 0
        assert {r["account_id"] for r in rows} == {account}
        assert {r["order_date"] for r in rows} == {DEMO_END_DATE.isoformat()}


def test_partial_failure_keeps_the_others(bulletin_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    data = yaml.safe_load((PROJECT_ROOT / "deployments/reports/daily-account-orders.yaml").read_text())
    data["audience"] = {
        "recipients": [
            {"ref": "good", "email": "good@example.com", "attributes": {"account_id": "ACC-0001"}},
            {"ref": "no-account", "email": "none@example.com", "attributes": {}},
        ]
    }
    (reports / "daily-account-orders.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("BULLETIN_REPORTS_DIR", str(reports))
    manifest = run_report("daily-account-orders", parameters=AS_OF)
    assert manifest.status is RunStatus.PARTIAL
    by_ref = {d.recipient: d for d in manifest.deliveries}
    assert by_ref["good"].status is DeliveryStatus.DELIVERED
    assert by_ref["no-account"].status is DeliveryStatus.FAILED
    assert "account_id" in (by_ref["no-account"].error or "")
    assert {a.outcome for a in by_ref["no-account"].artifacts} == {"failed"}, "each file it did not get, listed"


def test_dry_run_stores_nothing(bulletin_env: Path) -> None:
    manifest = run_report("daily-account-orders", parameters=AS_OF, dry_run=True, recipients=None)
    assert manifest.dry_run and manifest.note and "dry run" in manifest.note
    assert not (bulletin_env / "bucket").exists()
    assert not (bulletin_env / "manifests").exists()
    for delivery in manifest.deliveries:
        for artifact in delivery.artifacts:
            assert local_path(artifact.uri).is_file()


def test_recipient_and_format_selection(bulletin_env: Path) -> None:
    full = run_report("weekly-regional-sales", parameters=AS_OF, dry_run=True)
    one = full.deliveries[0].recipient
    manifest = run_report("weekly-regional-sales", parameters=AS_OF, recipients=[one], formats=["xlsx"])
    assert [d.recipient for d in manifest.deliveries] == [one]
    assert {(a.format, a.channel) for a in manifest.deliveries[0].artifacts} == {("xlsx", "s3"), ("xlsx", "email")}


def test_artifacts_are_published(bulletin_env: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    manifest = run_report("daily-account-orders", parameters=AS_OF)

    async def read() -> list:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["deliveries-daily-account-orders"])),
                sort=ArtifactSort.CREATED_DESC,
            )

    import asyncio

    artifacts = asyncio.run(read())
    ours = [a for a in artifacts if manifest.run_id in (a.description or "")]
    assert ours, "a table artifact lists the deliveries of this run"
    table = ours[0].data
    rows = json.loads(table) if isinstance(table, str) else table
    refs = {row["recipient"] for row in rows}
    assert refs == {d.recipient for d in manifest.deliveries}
    assert {"format", "key", "rows", "bytes", "sha256"} <= set(rows[0])
