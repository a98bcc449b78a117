"""`bulletin demo` on a warehouse whose sales end yesterday, as the demo builds it: every report it delivers, the
webhook chain's included (those runs report on "yesterday"), has rows for every recipient, and the demo ends without
a warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bulletin.demo_data import build_demo_warehouse, demo_end_date, demo_warehouse_ready, yesterday
from bulletin.edge.cli import main


@pytest.fixture
def fresh_warehouse(bulletin_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small demo warehouse built today, as `bulletin demo` builds its own (with 1.2M rows)."""
    path = tmp_path / "fresh.duckdb"
    build_demo_warehouse(path, rows=3_000)
    monkeypatch.setenv("BULLETIN_WAREHOUSE_URL", str(path))
    return path


def test_the_demo_data_ends_yesterday(fresh_warehouse: Path) -> None:
    assert demo_end_date(fresh_warehouse) == yesterday()
    assert demo_warehouse_ready(fresh_warehouse, through=yesterday())


@pytest.mark.usefixtures("prefect_api", "fresh_warehouse")
def test_every_demo_report_has_rows_for_every_recipient_and_no_warning(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        code = main(["demo", "--out", str(tmp_path / "out"), "--json"])
    out, err = capfd.readouterr()
    assert code == 0, err[-3000:]
    manifests = json.loads(out)
    assert [m["report_id"] for m in manifests[-2:]] == ["daily-account-orders", "account-orders-digest"], "the chain"
    empty = [
        (m["report_id"], d["recipient"])
        for m in manifests
        for d in m["deliveries"]
        if d["status"] != "DELIVERED" or max((a["rows"] for a in d["artifacts"]), default=0) == 0
    ]
    assert not empty, f"delivered without rows: {empty}"
    assert sum(len(m["deliveries"]) for m in manifests) >= 36  # 8 + 8 + 8 in the reports, 16 in the chain
    logged = caplog.text + err
    for word in ("WARNING", "Warning", "IntegrityError", "Traceback"):
        assert word not in logged, [line for line in logged.splitlines() if word in line][:5]
