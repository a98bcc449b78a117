"""What a run leaves running when it returns (tasks.delivery.fanout.after_the_run): its worker processes' stop. The
run does not wait for it, the process does (the thread is not a daemon), and a failure is a warning in the run's log.
A real Prefect API (the session's test server) for the run's logger."""

from __future__ import annotations

import threading
import time

import pytest
from prefect import flow

from tasks.delivery.fanout import after_the_run


@pytest.mark.usefixtures("prefect_api")
def test_the_run_returns_at_once_and_the_process_waits_for_the_work() -> None:
    release, done = threading.Event(), threading.Event()

    def slow_stop() -> None:
        release.wait(10)
        done.set()

    @flow(name="after-the-run-probe")
    def probe() -> threading.Thread:
        return after_the_run(slow_stop, "the worker processes did not stop cleanly")

    started = time.monotonic()
    thread = probe()
    assert time.monotonic() - started < 5 and not done.is_set(), "the run waited for the work"
    assert thread.is_alive() and not thread.daemon, "the interpreter must wait for it before the process exits"
    release.set()
    thread.join(10)
    assert done.is_set()


@pytest.mark.usefixtures("prefect_api")
def test_a_failure_after_the_run_is_a_warning_not_an_exception(caplog: pytest.LogCaptureFixture) -> None:
    def broken_stop() -> None:
        raise OSError("a worker process would not exit")

    @flow(name="after-the-run-failure-probe")
    def probe() -> threading.Thread:
        return after_the_run(broken_stop, "the worker processes did not stop cleanly")

    with caplog.at_level("WARNING"):
        probe().join(10)
    assert "the worker processes did not stop cleanly: a worker process would not exit" in caplog.text
