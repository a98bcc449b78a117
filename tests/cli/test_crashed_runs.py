"""The automations that mark a Bulletin flow run Crashed when its process died, on a real ``prefect server start``.

``bulletin deployments automations`` is applied twice and leaves one automation of each kind, updated in place.
Then a flow run in its own process, tagged ``bulletin`` as every deployed run is, sends its first heartbeat and is
killed with SIGKILL: nothing tells the server, and only the automation can move it from Running to Crashed. A run of
the same kind that ends normally stays Completed. A run left Pending (its worker died before starting it) is crashed
by the second automation; one that turned Running in time is not; and a crashed run that turns Running late knows
it was crashed (the deliver-shard flow then stands down).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bulletin.edge.automations import (
    AUTOMATION_NAME,
    PENDING_AUTOMATION_NAME,
    apply_automation,
    crash_silent_runs,
    crash_unstarted_runs,
)
from bulletin.settings import PROJECT_ROOT
from tasks.delivery.sharding import crashed_before
from tests.fixtures.prefect_server import prefect_env, wait_for_events

BULLETIN = str(os.path.join(os.path.dirname(sys.executable), "bulletin"))
#: A short wait for the test (the command refuses anything under the 30 s heartbeat interval; the probe is killed
#: right after its first heartbeat, so it never needs a second one).
WITHIN_SECONDS = 10  # Prefect's minimum for a proactive trigger
DETECTION_TIMEOUT_SECONDS = 60
STARTUP_TIMEOUT_SECONDS = 60

#: A flow run in its own process, tagged as the deployed runs are: prints its id, then sleeps ``argv[1]`` seconds.
PROBE = """
import sys, time
from prefect import flow, tags
from prefect.runtime import flow_run

@flow(name="heartbeat-probe")
def probe(seconds: float) -> None:
    print(flow_run.id, flush=True)
    time.sleep(seconds)

with tags("bulletin"):
    probe(float(sys.argv[1]))
"""


@pytest.fixture
def client(prefect_server: str) -> Iterator[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as sync:
        yield sync


def delete_named(client: Any, name: str) -> None:
    """The session's server is shared: an automation left behind would crash other tests' long runs."""
    for automation in client.read_automations_by_name(name):
        client.delete_automation(automation.id)


def automations_command(api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BULLETIN, "deployments", "automations", *args],
        capture_output=True,
        text=True,
        env={**prefect_env(api_url), "PYTHONPATH": str(PROJECT_ROOT)},
        cwd=PROJECT_ROOT,
        timeout=120,
    )


def apply_command(api_url: str, *args: str) -> str:
    result = automations_command(api_url, *args)
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def test_applying_the_automation_twice_leaves_one_updated_in_place(prefect_server: str, client: Any) -> None:
    try:
        assert apply_command(prefect_server).count("created automation") == 2
        (first,) = client.read_automations_by_name(AUTOMATION_NAME)
        (pending_first,) = client.read_automations_by_name(PENDING_AUTOMATION_NAME)
        again = apply_command(prefect_server, "--within", "120", "--pending-within", "600")
        assert again.count("updated automation") == 2
        (second,) = client.read_automations_by_name(AUTOMATION_NAME)
        (pending,) = client.read_automations_by_name(PENDING_AUTOMATION_NAME)
    finally:
        delete_named(client, AUTOMATION_NAME)
        delete_named(client, PENDING_AUTOMATION_NAME)

    assert pending.id == pending_first.id and pending.trigger.within.total_seconds() == 600
    assert pending.trigger.after == {"prefect.flow-run.Pending"}
    assert {"prefect.flow-run.Running", "prefect.flow-run.Crashed"} <= pending.trigger.expect
    assert second.id == first.id
    assert first.trigger.within.total_seconds() == 90 and second.trigger.within.total_seconds() == 120
    trigger = second.trigger
    assert trigger.posture.value == "Proactive"
    assert trigger.after == {"prefect.flow-run.heartbeat", "prefect.flow-run.Running"}
    assert {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed"} <= trigger.expect
    assert [(a.type, a.state.value) for a in second.actions] == [("change-flow-run-state", "CRASHED")]


def start_probe(
    api_url: str, seconds: float, started: list[subprocess.Popen[str]]
) -> tuple[subprocess.Popen[str], str]:
    env = prefect_env(api_url, PREFECT_LOGGING_LEVEL="WARNING")
    process = subprocess.Popen(
        [sys.executable, "-c", PROBE, str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    started.append(process)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def wait_for_heartbeat(client: Any, run_id: str) -> None:
    wait_for_events(client, "prefect.flow-run.heartbeat", run_id, timeout=STARTUP_TIMEOUT_SECONDS, poll=0.2)


def wait_for_state(client: Any, run_id: str, wanted: str, timeout: float) -> tuple[str, float]:
    started = time.monotonic()
    while True:
        state = client.read_flow_run(run_id).state
        if state.type.value == wanted or time.monotonic() - started > timeout:
            return state.type.value, time.monotonic() - started
        time.sleep(0.5)


def test_a_killed_flow_run_is_marked_crashed_when_its_heartbeats_stop(prefect_server: str, client: Any) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    name = "test: crash silent bulletin runs"
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        asyncio.run(apply_automation(crash_silent_runs(WITHIN_SECONDS, name=name)))
    probes: list[subprocess.Popen[str]] = []
    try:
        (finishing, finishing_id), (killed, killed_id) = (
            start_probe(prefect_server, seconds, probes) for seconds in (2, 600)
        )
        assert finishing_id and killed_id, "a probe exited before starting its flow run"
        wait_for_heartbeat(client, killed_id)
        assert client.read_flow_run(killed_id).state.type.value == "RUNNING"
        os.killpg(killed.pid, signal.SIGKILL)  # the flow-run process and anything it started: no goodbye
        killed.wait(timeout=30)
        assert finishing.wait(timeout=60) == 0

        state, seconds = wait_for_state(client, killed_id, "CRASHED", DETECTION_TIMEOUT_SECONDS)
        assert state == "CRASHED", f"still {state} {seconds:.0f} s after SIGKILL"
        # A run that ended normally before its wait ran out is left alone, even after the wait.
        time.sleep(max(0.0, WITHIN_SECONDS + 1 - seconds))
        assert client.read_flow_run(finishing_id).state.type.value == "COMPLETED"
        print(json.dumps({"crashed_after_kill_seconds": round(seconds, 1)}))
    finally:
        delete_named(client, name)
        for process in probes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def test_the_command_refuses_waits_that_would_crash_live_runs(prefect_server: str) -> None:
    for args, named in ((["--within", "30"], "--within"), (["--pending-within", "59"], "--pending-within")):
        result = automations_command(prefect_server, *args)
        assert result.returncode != 0 and named in result.stderr and "Traceback" not in result.stderr


def pending_run(client: Any) -> Any:
    """A flow run tagged as deployed runs are, taken by a worker (Pending) that will never start its process."""
    from prefect import flow
    from prefect.states import Pending

    @flow(name="pending-probe")
    def probe() -> None:  # never runs: only its flow runs are made
        return None

    run = client.create_flow_run(probe, tags=["bulletin"])
    client.set_flow_run_state(run.id, Pending())
    return run


def test_a_run_whose_worker_never_started_it_is_marked_crashed(prefect_server: str, client: Any) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Cancelled, Running

    name = "test: crash unstarted bulletin runs"
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        asyncio.run(apply_automation(crash_unstarted_runs(WITHIN_SECONDS, name=name)))
    made: list[Any] = []
    try:
        made.extend((pending_run(client), pending_run(client)))
        abandoned, started = made
        client.set_flow_run_state(started.id, Running())
        state, seconds = wait_for_state(client, abandoned.id, "CRASHED", DETECTION_TIMEOUT_SECONDS)
        assert state == "CRASHED", f"still {state} {seconds:.0f} s after Pending"
        assert "Pending" in client.read_flow_run(abandoned.id).state.message
        time.sleep(max(0.0, WITHIN_SECONDS + 2 - seconds))  # past the started run's wait too
        assert client.read_flow_run(started.id).state.type.value == "RUNNING"

        # Its worker was alive after all and starts it late: Prefect lets it turn Running, and the run can tell it
        # was declared dead (deliver-shard then stands down: its parent has started another attempt).
        assert client.set_flow_run_state(abandoned.id, Running()).status.value == "ACCEPT"
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
            assert crashed_before(abandoned.id) and not crashed_before(started.id)
    finally:
        delete_named(client, name)
        # The session's server is shared: a run left Running looks like work left for a worker to other tests.
        for run in made:
            client.set_flow_run_state(run.id, Cancelled(), force=True)
