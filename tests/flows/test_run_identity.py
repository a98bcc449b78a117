"""Runs that the Prefect scheduler creates together are still told apart, against the session's real Prefect API.

Prefect 3's flow-run ids are UUIDv7: their first 12 hex digits are the millisecond the server made them in, so the
runs of one scheduler batch share them. Here the server schedules a batch of slots (``POST /deployments/{id}/schedule``,
the scheduler's own code, as in test_missed_runs.py) and each run is executed the way a worker's subprocess does.
Each run must deliver, keep its own manifest, be listed by ``bulletin schedules missed`` and refresh its dependents.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.schemas.objects import FlowRun, State
from prefect.flow_engine import run_flow

from bulletin.demo_data import DEMO_END_DATE
from bulletin.edge.cli import main
from bulletin.models import Manifest, RunStatus
from flows.deliver_report import deliver_report
from flows.refresh import refresh_dependents
from tasks.delivery.manifest import list_manifests
from tests.flows.test_missed_runs import scheduled_runs

pytestmark = pytest.mark.usefixtures("prefect_api")

UPSTREAM = "daily-account-orders"
AS_OF = {"as_of": DEMO_END_DATE.isoformat()}
SLOTS = 3
ONE_RECIPIENT = {
    "recipients": [{"ref": "acc-1", "email": "acc1@example.com", "attributes": {"account_id": "ACC-0001"}}]
}
DEPENDENT = {
    "id": "orders-digest",
    "title": "Orders digest",
    "dataset": "orders",
    "depends_on": [UPSTREAM],
    "columns": ["order_id", "order_date", "account_id", "amount"],
    "parameters": {"as_of": {"type": "date", "default": DEMO_END_DATE.isoformat()}},
    "filters": [{"field": "order_date", "op": "=", "value": "{{ params.as_of }}"}],
    "formats": ["csv"],
    "audience": ONE_RECIPIENT,
    "secure_filters": {"orders": [{"field": "account_id", "op": "=", "value": "{{ recipient.account_id }}"}]},
}


@pytest.fixture
def reports(bulletin_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "reports"
    folder.mkdir()
    monkeypatch.setenv("BULLETIN_REPORTS_DIR", str(folder))
    (folder / "orders-digest.yaml").write_text(yaml.safe_dump(DEPENDENT))
    return folder


def write_upstream(folder: Path, **changes: Any) -> None:
    daily = yaml.safe_load((Path(__file__).parents[2] / "deployments/reports" / f"{UPSTREAM}.yaml").read_text())
    data = {**daily, "audience": ONE_RECIPIENT, "schedule": {"cron": "* * * * *", "timezone": "UTC"}, **changes}
    (folder / f"{UPSTREAM}.yaml").write_text(yaml.safe_dump(data))


def one_batch(start: datetime) -> list[FlowRun]:
    """The runs the Prefect server schedules in one batch for a minutely deployment, ``SLOTS`` slots from ``start``:
    a batch whose ids share their first 12 hex digits (a batch that straddled a millisecond is made again)."""
    for _ in range(5):
        runs = scheduled_runs(UPSTREAM, "* * * * *", start, start + timedelta(minutes=SLOTS - 1))
        assert len(runs) == SLOTS and all(r.auto_scheduled for r in runs)
        if len({r.id.hex[:12] for r in runs}) == 1:
            return runs
    pytest.fail("the Prefect server never made a batch of runs within one millisecond")


def execute(run: FlowRun) -> Manifest:
    state = run_flow(deliver_report, flow_run=run, return_type="state")
    assert isinstance(state, State)
    manifest = state.result(raise_on_failure=False)
    assert isinstance(manifest, Manifest), manifest
    return manifest


def outcomes(manifest: Manifest) -> set[str]:
    return {a.outcome for d in manifest.deliveries for a in d.artifacts}


def test_each_run_of_one_batch_delivers_keeps_its_manifest_and_refreshes_its_dependents(
    reports: Path, bulletin_env: Path
) -> None:
    write_upstream(reports, catch_up="all", tolerance_seconds=3600)
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    runs = one_batch(minute - timedelta(minutes=SLOTS + 2))

    upstream = [execute(run) for run in runs]

    assert [m.status for m in upstream] == [RunStatus.COMPLETED] * SLOTS
    assert all(outcomes(m) == {"sent"} for m in upstream)

    # The chain: each upstream run's run.completed event carries its run id; each refreshes the dependent anew.
    for manifest in upstream:
        state = refresh_dependents(
            report_id=UPSTREAM, upstream_run_id=manifest.run_id, upstream="bulletin", return_state=True
        )
        assert isinstance(state, State) and state.is_completed(), state.message
        (refreshed,) = state.result(raise_on_failure=False)
        assert refreshed.report_id == "orders-digest" and manifest.run_id in (refreshed.run_key or "")
        assert refreshed.delivered == 1 and outcomes(refreshed) == {"sent"}, refreshed
    assert len(list_manifests(bulletin_env / "manifests", report_id="orders-digest")) == SLOTS

    # Each run keeps its own manifest, named by its whole flow-run id.
    saved = list_manifests(bulletin_env / "manifests", report_id=UPSTREAM)
    assert sorted(m.run_id for m in saved) == sorted(str(run.id) for run in runs)
    assert [m.run_id for m in upstream] == [str(run.id) for run in runs]


def test_schedules_missed_lists_every_missed_run_of_one_batch(
    reports: Path, bulletin_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_upstream(reports)
    three_days_ago = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=3)
    runs = one_batch(three_days_ago)

    assert [execute(run).status for run in runs] == [RunStatus.MISSED] * SLOTS

    capsys.readouterr()
    assert main(["schedules", "missed", "--report", UPSTREAM, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["run_id"] for r in rows) == sorted(str(run.id) for run in runs)
    assert len({r["run_key"] for r in rows}) == SLOTS  # one per slot
