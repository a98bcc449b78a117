"""The demo beside ``bulletin serve``: the demo's Prefect database is serve's (both live under BULLETIN_HOME), so it
sees the deployments serve made, and serve's worker runs whatever the demo leaves behind on them.

A real ``prefect server start`` holds what a stopped ``bulletin serve`` leaves: a work pool with no worker and the
``deliver-report/daily-account-orders`` and ``refresh-dependents/refresh-dependents`` deployments. The demo's webhook
chain (in a subprocess, as ``bulletin demo`` runs it) must finish there, and leave no run for a worker to pick up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulletin.settings import PROJECT_ROOT
from tests.fixtures.prefect_server import prefect_env

#: The chain takes about 20 s here; through a deployment with no worker it would wait for ever (today: 240 s).
CHAIN_SECONDS = 90
CHAIN = f"""
import json
from bulletin.edge.cli import demo_chain
from bulletin.settings import Settings
from tasks.tokens import load_keyset

demo_chain.CHAIN_TIMEOUT_SECONDS = {CHAIN_SECONDS}
settings = Settings()
load_keyset(settings, create=True)
result = demo_chain.run_chain(settings.manifests_dir)
print(json.dumps([result.upstream.status.value, result.dependent.status.value]))
"""
SERVE_DEPLOYMENTS = {"deliver-report": "daily-account-orders", "refresh-dependents": "refresh-dependents"}
UNFINISHED = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING")


@pytest.fixture
def served_deployments(prefect_server: str) -> Iterator[str]:
    """The deployments a stopped ``bulletin serve`` leaves, on a pool no worker polls; removed afterwards."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    pool = f"no-worker-{uuid.uuid4().hex[:8]}"
    created = []
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        for flow_name, name in SERVE_DEPLOYMENTS.items():
            flow_id = client.create_flow_from_name(flow_name)
            created.append(client.create_deployment(flow_id, name, work_pool_name=pool, entrypoint="flows/x.py:x"))
        try:
            yield prefect_server
        finally:
            for deployment_id in created:
                client.delete_deployment(deployment_id)
            client.delete_work_pool(pool)


def unfinished_runs(api_url: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    states = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in UNFINISHED]))
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=states))
    return [f"{run.name} ({run.state_type}, deployment {run.deployment_id})" for run in runs]


def test_the_demo_chain_runs_here_beside_serves_deployments_and_leaves_no_run_behind(
    served_deployments: str, demo_warehouse: Path, tmp_path: Path
) -> None:
    assert unfinished_runs(served_deployments) == []
    env = prefect_env(
        served_deployments,
        BULLETIN_HOME=str(tmp_path / "home"),
        BULLETIN_WAREHOUSE_URL=str(demo_warehouse),
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    for _ in range(2):  # any number of times
        done = subprocess.run(
            [sys.executable, "-c", CHAIN],
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=CHAIN_SECONDS + 120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.strip().splitlines()[-1]) == ["COMPLETED", "COMPLETED"]
        # Nothing is left for serve's worker: no run waits, on a deployment or anywhere else.
        assert unfinished_runs(served_deployments) == []
