"""``once_final`` (tasks/delivery/fanout.py), against the session's real Prefect API: the work waits for the flow
run's final state, whatever that state is, and runs at once outside a flow run. deliver-report uses it for a run's
Prefect events, so that 1,000 of them no longer hold up the run's end."""

from __future__ import annotations

import contextvars
import threading
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext

from tasks.delivery import fanout

pytestmark = pytest.mark.usefixtures("prefect_api")


def _state_of(run_id: Any) -> str:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return state.type.value if state is not None else "none"


@pytest.mark.parametrize("fails", [False, True])
def test_the_work_runs_once_the_flow_run_has_its_final_state(fails: bool) -> None:
    seen: dict[str, Any] = {}
    started, checked = threading.Event(), threading.Event()

    def check() -> None:  # the test's own thread and context: the flow run's client is closed once it ends
        if started.wait(15):
            seen["api"] = _state_of(seen["run_id"])  # what the Prefect API (so the UI) said when the work started
        checked.set()

    def work() -> None:
        started.set()
        checked.wait(15)

    checker = threading.Thread(target=contextvars.copy_context().run, args=(check,))
    checker.start()

    @flow(name="once-final-test")
    def ends() -> int:
        context = FlowRunContext.get()
        assert context is not None and context.flow_run is not None
        seen["run_id"] = context.flow_run.id
        fanout.once_final(work, "the test's work failed")
        assert not started.wait(0.3), "the work started while the run was still running"
        if fails:
            raise RuntimeError("the run fails")
        return 1

    state = ends(return_state=True)
    checker.join(20)
    assert seen.get("api") == state.type.value == ("FAILED" if fails else "COMPLETED")


def test_outside_a_flow_run_the_work_runs_at_once() -> None:
    done = threading.Event()
    fanout.once_final(done.set, "the test's work failed").join(5)
    assert done.is_set()


def test_a_failing_work_is_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("the events API is down")

    @flow(name="once-final-broken")
    def ends() -> int:
        fanout.once_final(broken, "the run's Prefect events were not emitted")
        return 1

    assert ends() == 1
    for thread in threading.enumerate():
        if thread.name == "bulletin-after-the-run":
            thread.join(10)
    assert "the run's Prefect events were not emitted: the events API is down" in caplog.text
