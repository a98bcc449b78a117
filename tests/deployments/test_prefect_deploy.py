"""`prefect deploy --all --no-prompt` from the project root against a real `prefect server start`, read back through
the Prefect client, checked with `bulletin deployments check`, and one report deployment run by a real process worker
to a completed delivery."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bulletin.demo_data import DEMO_END_DATE
from bulletin.deployment_checks import read_declared_deployments
from bulletin.deployments import planned_deployments, write_prefect_yaml
from bulletin.reports import load_reports
from bulletin.settings import PROJECT_ROOT, Settings
from tasks.dependents import refresh_run_key
from tests.fixtures.prefect_server import PREFECT, prefect_env

BULLETIN = str(Path(sys.executable).with_name("bulletin"))
REPORTS_DIR = PROJECT_ROOT / "deployments" / "reports"
ADHOC_QUEUE = "tests-adhoc"


def run(
    *args: str, env: dict[str, str], cwd: Path = PROJECT_ROOT, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def deployed(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The bulletin work pool created and every deployment of the committed prefect.yaml deployed."""
    env = prefect_env(prefect_server, PREFECT_HOME=str(tmp_path_factory.mktemp("prefect-cli")))
    for command in (
        [PREFECT, "work-pool", "create", "bulletin", "--type", "process"],
        # Runs the worker test creates go to their own queue, so the worker never also picks up a scheduled run
        # (a report may be due on its schedule) and the test stays about one flow run long.
        [PREFECT, "work-queue", "create", ADHOC_QUEUE, "--pool", "bulletin"],
        [PREFECT, "deploy", "--all", "--no-prompt"],
    ):
        result = run(*command, env=env)
        assert result.returncode == 0, (command, result.stdout[-3000:], result.stderr[-3000:])
    return prefect_server


@pytest.fixture
def client(deployed: str) -> Iterator[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: deployed}), get_client(sync_client=True) as sync_client:
        yield sync_client


def bulletin_cli(*args: str, api_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run(BULLETIN, *args, env=prefect_env(api_url, **env), timeout=120)


def test_every_deployment_reads_back_as_the_reports_define(client: Any) -> None:
    planned = planned_deployments(load_reports(REPORTS_DIR).values())
    assert {"deliver-report/weekly-regional-sales", "deliver-webhooks/deliver-webhooks"} <= {
        p.full_name for p in planned
    }
    for spec in planned:
        deployment = client.read_deployment_by_name(spec.full_name)
        assert deployment.name == spec.name
        assert deployment.work_pool_name == "bulletin"
        assert deployment.entrypoint == spec.entrypoint
        assert deployment.parameters == dict(spec.parameters)
        assert deployment.tags == list(spec.tags)
        assert deployment.description == spec.description
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $BULLETIN_PROJECT_DIR }}"}}
        ]
        schedules = sorted((s.schedule.cron, s.schedule.timezone, s.parameters) for s in deployment.schedules)
        assert schedules == sorted((s.cron, s.timezone, dict(s.parameters)) for s in spec.schedules)

    weekly = client.read_deployment_by_name("deliver-report/weekly-regional-sales")
    assert [(s.schedule.cron, s.schedule.timezone) for s in weekly.schedules] == [("0 7 * * 1", "Europe/London")]
    assert weekly.tags == ["bulletin", "weekly-regional-sales", "weekly"]
    assert weekly.description.startswith("Every sales line of the seven days")
    daily = client.read_deployment_by_name("deliver-report/daily-account-orders")
    assert [(s.schedule.cron, s.schedule.timezone) for s in daily.schedules] == [("30 6 * * *", "America/New_York")]
    digest = client.read_deployment_by_name("deliver-report/account-orders-digest")
    assert digest.schedules == [] and "triggered" in digest.tags


def test_the_scheduler_makes_no_housekeeping_runs(client: Any) -> None:
    # The scheduler fills in the report deployments' coming runs; the housekeeping deployments get none (they ran
    # every minute, about 2,880 runs a day in the UI): the API starts their runs when there is work.
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    def runs_of(full_name: str) -> list[Any]:
        deployment_id = client.read_deployment_by_name(full_name).id
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))

    deadline = time.monotonic() + 120
    while not runs_of("deliver-report/daily-account-orders"):
        assert time.monotonic() < deadline, "the scheduler made no run of a daily report in 120 s"
        time.sleep(1)
    assert runs_of("deliver-webhooks/deliver-webhooks") == []
    assert runs_of("deliver-scheduled-events/deliver-scheduled-events") == []


def test_a_schedule_left_by_an_earlier_deploy_is_named_and_cleared(deployed: str, client: Any) -> None:
    # `prefect deploy` keeps the schedules of a deployment it is given none for: the every-minute housekeeping
    # schedule of an earlier version stays, on a database that `bulletin serve` made before.
    from prefect.client.schemas.schedules import CronSchedule

    deployment = client.read_deployment_by_name("deliver-webhooks/deliver-webhooks")
    client.create_deployment_schedules(deployment.id, [(CronSchedule(cron="* * * * *", timezone="UTC"), True)])
    stale = bulletin_cli("deployments", "check", api_url=deployed)
    assert stale.returncode == 2
    assert "prefect deployment schedule clear deliver-webhooks/deliver-webhooks --accept-yes" in stale.stderr
    cleared = bulletin_cli("deployments", "check", "--clear-stale-schedules", api_url=deployed)
    assert cleared.returncode == 0, cleared.stderr
    assert "cleared 1 schedule(s) of deliver-webhooks/deliver-webhooks" in cleared.stdout
    assert client.read_deployment_by_name("deliver-webhooks/deliver-webhooks").schedules == []


def test_check_passes_against_the_deployed_server(deployed: str) -> None:
    result = bulletin_cli("deployments", "check", api_url=deployed)
    assert result.returncode == 0, result.stderr
    declared = read_declared_deployments(PROJECT_ROOT / "prefect.yaml")
    assert f"ok: {len(declared)} deployment(s)" in result.stdout


def test_check_fails_when_the_work_pool_is_missing(deployed: str, tmp_path: Path) -> None:
    # A prefect.yaml naming a pool the server does not have: `prefect deploy` would only warn; our check refuses.
    other = tmp_path / "prefect.yaml"
    write_prefect_yaml(Settings(reports_dir=REPORTS_DIR), other, work_pool="nightly")
    result = bulletin_cli("deployments", "check", "--path", str(other), api_url=deployed)
    assert result.returncode == 3, result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "work pool 'nightly'" in last and "does not exist" in last
    assert "prefect work-pool create nightly --type process" in last
    assert "Traceback" not in result.stderr
    # ...and the deployments on the server are on 'bulletin', which is not what that file says.
    assert "is on work pool 'bulletin', not 'nightly'" in result.stderr


def test_check_fails_when_a_report_is_not_deployed(deployed: str, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    shutil.copytree(REPORTS_DIR, reports)
    text = (reports / "daily-account-orders.yaml").read_text()
    (reports / "hourly-account-orders.yaml").write_text(
        text.replace("id: daily-account-orders", "id: hourly-account-orders").replace(
            "preset: daily at 06:30", "preset: every hour"
        )
    )
    prefect_yaml = tmp_path / "prefect.yaml"
    write_prefect_yaml(Settings(reports_dir=reports), prefect_yaml)
    result = bulletin_cli(
        "deployments", "check", "--path", str(prefect_yaml), api_url=deployed, BULLETIN_REPORTS_DIR=str(reports)
    )
    assert result.returncode == 3
    assert "deployment deliver-report/hourly-account-orders is missing on the Prefect server" in result.stderr
    assert "prefect deploy --all --no-prompt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # the problem, then the one-line error


def test_check_needs_a_reachable_server(tmp_path: Path) -> None:
    env = prefect_env("http://127.0.0.1:9/api")
    result = run(BULLETIN, "deployments", "check", env=env)
    assert result.returncode == 7
    assert result.stderr.strip() == "error: cannot reach the Prefect API at http://127.0.0.1:9/api: ConnectError"
    env.pop("PREFECT_API_URL")
    result = run(BULLETIN, "deployments", "check", env={**env, "PREFECT_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "PREFECT_API_URL is not set" in result.stderr


def heartbeat_related(client: Any, run_id: Any) -> set[tuple[str, str]]:
    """The related resources (id, role) of the run's first heartbeat event; events are stored a moment late."""
    query = {
        "filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "any_resource": {"id": [f"prefect.flow-run.{run_id}"]},
        },
        "limit": 1,
    }
    deadline = time.monotonic() + 30
    while True:
        response = client.request("POST", "/events/filter", json=query)
        response.raise_for_status()
        if events := response.json()["events"]:
            return {(r["prefect.resource.id"], r.get("prefect.resource.role", "")) for r in events[0]["related"]}
        assert time.monotonic() < deadline, f"no heartbeat event for {run_id}"
        time.sleep(0.5)


def test_a_worker_runs_a_report_deployment_to_a_completed_delivery(
    deployed: str, client: Any, demo_warehouse: Path, tmp_path: Path
) -> None:
    from prefect.client.schemas.objects import StateType

    deployment = client.read_deployment_by_name("deliver-report/daily-account-orders")
    as_of = DEMO_END_DATE.isoformat()
    flow_run = client.create_flow_run_from_deployment(
        deployment.id, parameters={"parameters": {"as_of": as_of}}, work_queue_name=ADHOC_QUEUE
    )
    home = tmp_path / "home"
    env = prefect_env(
        deployed,
        PREFECT_HOME=str(tmp_path / "prefect-worker"),
        BULLETIN_HOME=str(home),
        BULLETIN_WAREHOUSE_URL=str(demo_warehouse),
        # The pull step of prefect.yaml: the flow runs from the checkout, wherever the worker was started.
        BULLETIN_PROJECT_DIR=str(PROJECT_ROOT),
    )
    worker = run(
        PREFECT, "worker", "start", "--pool", "bulletin", "--work-queue", ADHOC_QUEUE, "--run-once",
        env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]

    state = client.read_flow_run(flow_run.id).state
    assert state.type == StateType.COMPLETED, (state, worker.stdout[-3000:])
    assert state.message.startswith("COMPLETED: 8 delivered")
    # The crashed-run automation (bulletin/edge/automations.py) matches a run's heartbeats by the bulletin tag.
    assert ("prefect.tag.bulletin", "tag") in heartbeat_related(client, flow_run.id)
    assert client.read_flow_run(flow_run.id).parameters == {
        "report_id": "daily-account-orders",
        "parameters": {"as_of": as_of},
    }

    files = sorted((home / "bucket").rglob("*.csv"))
    assert len(files) == 8
    assert all("/daily-account-orders/" in str(f) for f in files)
    manifest = json.loads(next((home / "manifests" / "daily-account-orders").glob("*.json")).read_text())
    assert manifest["status"] == "COMPLETED" and len(manifest["deliveries"]) == 8

    ledger = run(BULLETIN, "deliveries", "list", "--json", env={**os.environ, "BULLETIN_HOME": str(home)})
    assert ledger.returncode == 0, ledger.stderr
    rows = json.loads(ledger.stdout)
    assert len(rows) == 8
    assert {r["status"] for r in rows} == {"sent"}
    assert {r["report_id"] for r in rows} == {"daily-account-orders"}
    assert {Path(r["uri"].removeprefix("file://")) for r in rows} == set(files)

    # The run's bulletin.run.completed event fired the digest's deployment trigger (its depends_on): a worker on
    # the pool's default queue runs it, under the key the refresh-dependents flow would use for this upstream run.
    digest = runs_of_deployment(client, "deliver-report/account-orders-digest", upstream_run_id=str(flow_run.id))
    assert digest.parameters["upstream_report"] == "daily-account-orders"
    again = run(PREFECT, "worker", "start", "--pool", "bulletin", "--run-once", env=env, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert client.read_flow_run(digest.id).state.type == StateType.COMPLETED, again.stdout[-3000:]
    saved = json.loads(next((home / "manifests" / "account-orders-digest").glob("*.json")).read_text())
    assert saved["run_key"] == refresh_run_key("account-orders-digest", "daily-account-orders", str(flow_run.id))
    assert saved["status"] == "COMPLETED" and saved["deliveries"]


def runs_of_deployment(client: Any, full_name: str, *, upstream_run_id: str, timeout: float = 60) -> Any:
    """The one flow run of ``full_name`` that names ``upstream_run_id``, once the automation has made it."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployment_id = client.read_deployment_by_name(full_name).id
    deadline = time.monotonic() + timeout
    while True:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
        found = [r for r in runs if r.parameters.get("upstream_run_id") == upstream_run_id]
        if found:
            (one,) = found
            return one
        assert time.monotonic() < deadline, f"no run of {full_name} after upstream run {upstream_run_id}"
        time.sleep(0.5)


def test_depends_on_is_a_deployment_trigger_that_ignores_failed_upstream_runs(client: Any) -> None:
    # `prefect deploy` made the trigger an automation of the digest's deployment; the Triggers tab shows it.
    import uuid
    from datetime import UTC, datetime

    digest_name = "deliver-report/account-orders-digest"
    digest = client.read_deployment_by_name(digest_name)
    (automation,) = [
        a for a in client.read_automations() if any(getattr(x, "deployment_id", None) == digest.id for x in a.actions)
    ]
    assert automation.trigger.expect == {"bulletin.run.completed"}
    events = [
        {
            "id": str(uuid.uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": "bulletin.run.completed",
            "resource": {"prefect.resource.id": "bulletin.report.daily-account-orders"},
            "related": [
                {
                    "prefect.resource.id": f"bulletin.run.{run_id}",
                    "prefect.resource.role": "run",
                    "bulletin.run.status": status,
                }
            ],
            "payload": {"run_id": run_id, "status": status},
        }
        for run_id, status in (("upstream-failed-1", "FAILED"), ("upstream-partial-1", "PARTIAL"))
    ]
    client.request("POST", "/events", json=events).raise_for_status()
    started = runs_of_deployment(client, digest_name, upstream_run_id="upstream-partial-1")
    client.delete_flow_run(started.id)  # no worker is to run it: the session's server is shared
    time.sleep(3)  # the failed run's event came first: had it matched, its run would exist by now
    with pytest.raises(AssertionError, match="no run of"):
        runs_of_deployment(client, digest_name, upstream_run_id="upstream-failed-1", timeout=0)
