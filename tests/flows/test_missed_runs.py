"""The missed-run policy in the deliver-report flow, against the session's real Prefect API.

Each test creates a deployment on the harness server and asks the server to schedule its runs over a window in the
past (``POST /deployments/{id}/schedule``, Prefect's backfill: the scheduler's own code, so the runs are
``auto_scheduled`` with their cron slots as expected start times). One run is then executed in this process the
way a worker's subprocess does, ``prefect.flow_engine.run_flow(flow, flow_run=...)``. Nothing of Prefect is mocked.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.client.schemas.objects import FlowRun, State
from prefect.client.schemas.schedules import CronSchedule
from prefect.client.schemas.sorting import FlowRunSort
from prefect.flow_engine import run_flow

from bulletin.demo_data import DEMO_END_DATE
from bulletin.models import DeliveryStatus, Manifest, RunStatus
from bulletin.settings import PROJECT_ROOT
from bulletin.store import scheduled_run_key
from flows.deliver_report import deliver_report
from tasks.delivery.manifest import list_manifests

pytestmark = pytest.mark.usefixtures("prefect_api")
AS_OF = {"as_of": DEMO_END_DATE.isoformat()}  # the schedule's parameters; a scheduled run key carries their digest
DAILY = yaml.safe_load((PROJECT_ROOT / "deployments/reports/daily-account-orders.yaml").read_text())
THREE_DAYS = 3 * 86_400
ONE_RECIPIENT = {
    "recipients": [{"ref": "acc-1", "email": "acc1@example.com", "attributes": {"account_id": "ACC-0001"}}]
}


@pytest.fixture
def reports(bulletin_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "reports"
    folder.mkdir()
    monkeypatch.setenv("BULLETIN_REPORTS_DIR", str(folder))
    return folder


def write_report(folder: Path, report_id: str, **changes: Any) -> None:
    data = {**DAILY, "id": report_id, "audience": ONE_RECIPIENT, **changes}
    (folder / f"{report_id}.yaml").write_text(yaml.safe_dump(data))


def scheduled_runs(report_id: str, cron: str, start: datetime, end: datetime) -> list[FlowRun]:
    """A deployment of deliver-report for ``report_id`` with ``cron`` (UTC), and the runs Prefect schedules for it
    between ``start`` and ``end``, oldest first."""

    async def create() -> list[FlowRun]:
        async with get_client() as client:
            flow_id = await client.create_flow(deliver_report)
            deployment_id = await client.create_deployment(
                flow_id=flow_id,
                name=f"missed-policy-test-{uuid.uuid4().hex[:8]}",
                parameters={"report_id": report_id, "parameters": AS_OF},
                schedules=[DeploymentScheduleCreate(schedule=CronSchedule(cron=cron, timezone="UTC"))],
            )
            response = await client.request(
                "POST",
                "/deployments/{id}/schedule",
                path_params={"id": deployment_id},
                json={"start_time": start.isoformat(), "end_time": end.isoformat()},
            )
            response.raise_for_status()
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            )

    runs = asyncio.run(create())
    assert runs and all(r.auto_scheduled for r in runs)
    return [r for r in runs if r.expected_start_time is not None and r.expected_start_time <= end]


def execute(run: FlowRun) -> tuple[State, Manifest]:
    state = run_flow(deliver_report, flow_run=run, return_type="state")
    assert isinstance(state, State)
    manifest = state.result(raise_on_failure=False)
    assert isinstance(manifest, Manifest), manifest
    return state, manifest


def read_state(run: FlowRun) -> State:
    async def read() -> State:
        async with get_client() as client:
            stored = await client.read_flow_run(run.id)
            assert stored.state is not None
            return stored.state

    return asyncio.run(read())


def test_a_run_whose_slot_is_days_old_is_missed_and_delivers_nothing(reports: Path, bulletin_env: Path) -> None:
    write_report(reports, "daily-account-orders", schedule={"cron": "0 7 * * *", "timezone": "UTC"})
    # The latest 07:00 UTC at least three days ago (before 07:00, today's 07:00 less three days is only 2 d 17 h back).
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    slot = three_days_ago.replace(hour=7, minute=0, second=0, microsecond=0)
    three_days_ago = slot if slot <= three_days_ago else slot - timedelta(days=1)
    (run,) = scheduled_runs("daily-account-orders", "0 7 * * *", three_days_ago, three_days_ago)
    assert run.expected_start_time == three_days_ago

    state, manifest = execute(run)

    assert state.is_cancelled() and state.name == "Missed"
    assert "missed: started 3 d" in (state.message or "") and "tolerance of 6 h" in (state.message or "")
    stored = read_state(run)  # what the Prefect UI shows
    assert stored.is_cancelled() and stored.name == "Missed"
    assert manifest.status is RunStatus.MISSED and manifest.deliveries == []
    assert manifest.run_key == scheduled_run_key("daily-account-orders", three_days_ago, AS_OF)
    assert manifest.note and manifest.note.startswith("missed:")
    # Nothing delivered, nothing claimed in the ledger; the manifest is saved and listed as missed.
    assert not (bulletin_env / "bucket").exists()
    (listed,) = list_manifests(bulletin_env / "manifests", report_id="daily-account-orders", status=RunStatus.MISSED)
    assert listed == manifest


def test_catch_up_latest_supersedes_older_slots_and_the_newest_delivers(reports: Path, bulletin_env: Path) -> None:
    # Daily at midnight with a tolerance of three days: the last three slots are all within it. (Daily, so the
    # newest slot cannot be overtaken by the next one while the test runs, unless it runs across midnight UTC.)
    write_report(
        reports, "daily-account-orders", schedule={"cron": "0 0 * * *", "timezone": "UTC"}, tolerance_seconds=THREE_DAYS
    )
    newest = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    runs = scheduled_runs("daily-account-orders", "0 0 * * *", newest - timedelta(days=2), newest)
    assert [r.expected_start_time for r in runs] == [newest - timedelta(days=d) for d in (2, 1, 0)]

    state, manifest = execute(runs[0])
    assert state.is_cancelled() and state.name == "Superseded"
    assert manifest.status is RunStatus.MISSED and manifest.note and manifest.note.startswith("superseded:")
    assert not (bulletin_env / "bucket").exists()

    state, manifest = execute(runs[-1])
    assert state.is_completed(), state.message
    assert manifest.status is RunStatus.COMPLETED
    assert [d.status for d in manifest.deliveries] == [DeliveryStatus.DELIVERED]
    assert manifest.run_key == scheduled_run_key("daily-account-orders", newest, AS_OF)
    assert (bulletin_env / "bucket").exists()


def test_catch_up_all_delivers_an_older_slot_within_tolerance(reports: Path) -> None:
    write_report(
        reports,
        "daily-account-orders",
        schedule={"cron": "0 0 * * *", "timezone": "UTC"},
        tolerance_seconds=THREE_DAYS,
        catch_up="all",
    )
    older = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    (run,) = scheduled_runs("daily-account-orders", "0 0 * * *", older, older)
    state, manifest = execute(run)
    assert state.is_completed(), state.message
    assert manifest.status is RunStatus.COMPLETED and manifest.delivered == 1


def test_ad_hoc_runs_are_never_missed(reports: Path) -> None:
    # The same report as the missed test: a plain call has no scheduled slot, so the policy does not apply.
    write_report(reports, "daily-account-orders", schedule={"cron": "0 7 * * *", "timezone": "UTC"})
    state = deliver_report(
        "daily-account-orders", parameters={"as_of": DEMO_END_DATE.isoformat()}, dry_run=True, return_state=True
    )
    assert state.is_completed()
    assert state.result(raise_on_failure=False).status is RunStatus.COMPLETED
