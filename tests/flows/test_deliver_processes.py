"""A run of 500+ recipients spreads its recipients over lanes on this process's threads and in a worker process:
every recipient is delivered once, with its own scope, and the ledger holds under a re-run, as in one process."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from bulletin.demo_data import DEMO_END_DATE
from bulletin.edge.cli.delivery import run_report
from bulletin.models import DeliveryStatus, RunStatus
from bulletin.settings import PROJECT_ROOT, Settings
from bulletin.store import list_deliveries, open_store
from tasks.delivery.services import PROCESSES_FROM_RECIPIENTS
from tests.flows.test_secrets_in_logs import read_run_logs

pytestmark = pytest.mark.usefixtures("prefect_api")
RECIPIENTS = PROCESSES_FROM_RECIPIENTS + 20


def _report(folder: Path) -> None:
    data = yaml.safe_load((PROJECT_ROOT / "deployments/reports/daily-account-orders.yaml").read_text())
    recipients = [
        {"ref": f"r{i:03d}", "email": f"r{i}@example.com", "attributes": {"account_id": f"ACC-{i % 200 + 1:04d}"}}
        for i in range(RECIPIENTS - 1)
    ]
    recipients.append({"ref": "no-account", "email": "none@example.com", "attributes": {}})
    data["audience"] = {"recipients": recipients}
    folder.mkdir()
    (folder / "daily-account-orders.yaml").write_text(yaml.safe_dump(data))


def test_large_run_uses_a_worker_process_and_delivers_each_recipient_once(
    bulletin_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _report(tmp_path / "reports")
    monkeypatch.setenv("BULLETIN_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("BULLETIN_DELIVERY_PROCESSES", "1")
    params = {"as_of": DEMO_END_DATE.isoformat()}
    since = datetime.now(UTC)
    manifest = run_report("daily-account-orders", parameters=params, run_key="spread-1")
    assert manifest.status is RunStatus.PARTIAL
    by_ref = {d.recipient: d for d in manifest.deliveries}
    assert len(manifest.deliveries) == len(by_ref) == RECIPIENTS
    assert by_ref["no-account"].status is DeliveryStatus.FAILED
    assert "account_id" in (by_ref["no-account"].error or "")
    delivered = [d for d in manifest.deliveries if d.status is DeliveryStatus.DELIVERED]
    assert len(delivered) == RECIPIENTS - 1
    lanes = [m for m in read_run_logs(since).splitlines() if m.startswith("Deliveries per lane")]
    assert lanes, "the run did not spread its recipients over lanes"
    counts = dict(part.rsplit(" ", 1) for part in lanes[0].removeprefix("Deliveries per lane: ").split(", "))
    assert set(counts) == {"thread 1", "process 1.1", "process 1.2"}
    assert sum(int(n) for n in counts.values()) == RECIPIENTS
    assert int(counts["process 1.1"]) + int(counts["process 1.2"]) >= 1 and int(counts["thread 1"]) >= 1

    for delivery in delivered[:: len(delivered) // 10]:  # files from both lanes hold only their account's rows
        account = f"ACC-{int(delivery.recipient[1:]) % 200 + 1:04d}"
        text = Path(urlparse(delivery.artifacts[0].uri).path).read_text(encoding="utf-8")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert {r["account_id"] for r in rows} <= {account}
        assert delivery.artifacts[0].rows == len(rows)

    with open_store(Settings().database) as store:
        sent = list_deliveries(store, report_id="daily-account-orders", status="sent", limit=10_000)
    assert sorted(r.recipient for r in sent) == sorted(d.recipient for d in delivered)

    again = run_report("daily-account-orders", parameters=params, run_key="spread-1")
    outcomes = {a.outcome for d in again.deliveries if d.recipient != "no-account" for a in d.artifacts}
    assert outcomes == {"already_sent"}
    assert {a.outcome for a in {d.recipient: d for d in again.deliveries}["no-account"].artifacts} == {"failed"}
