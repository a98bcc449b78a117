"""Child processes of ``bulletin serve``: the process table, and stopping a child and what it started, with real
processes (a child that starts a grandchild in a session of its own, as the Prefect worker does with flow runs)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bulletin.edge.supervisor.processes import (
    ProcessInfo,
    ProcessTracker,
    StopSignals,
    descendants,
    is_running,
    parse_stat,
    read_process_table,
    start_child,
    stop_child,
    sweep,
    wait_until,
)
from bulletin.errors import ConfigError

linux_only = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc (Linux)")

# A child that starts a grandchild in a new session, writes its pid, and ignores SIGTERM in the grandchild so that
# only a direct signal (SIGKILL after the sweep's grace) ends it.
PARENT = """
import subprocess, sys, time
grandchild = subprocess.Popen(
    [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"],
    start_new_session=True,
)
open(sys.argv[1], "w").write(str(grandchild.pid))
time.sleep(600)
"""


def test_parse_stat_reads_names_with_spaces_and_parentheses() -> None:
    text = "4242 (python -m (x) y) S 17 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 3 0 987654 1000 200 0"
    assert parse_stat(text) == ProcessInfo(pid=4242, ppid=17, pgid=4242, state="S", start=987654)


def test_descendants_walks_the_whole_tree() -> None:
    rows = [(1, 0), (10, 1), (11, 10), (12, 11), (13, 10), (20, 1), (21, 20)]
    table = {pid: ProcessInfo(pid, ppid, pid, "S", pid) for pid, ppid in rows}
    assert descendants(table, 10) == {11, 12, 13}
    assert descendants(table, 12) == set()
    assert descendants(table, 99) == set()


def test_is_running_refuses_zombies_and_reused_pids() -> None:
    info = ProcessInfo(5, 1, 5, "S", 100)
    assert is_running(info, 100)
    assert not is_running(info, 101)
    assert not is_running(ProcessInfo(5, 1, 5, "Z", 100), 100)
    assert not is_running(None, 100)


@linux_only
def test_read_process_table_sees_this_process() -> None:
    table = read_process_table()
    assert table[os.getpid()].ppid == os.getppid()


def test_a_missing_command_is_one_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot start the thing"):
        start_child("the thing", [str(tmp_path / "nope")], env=os.environ, cwd=tmp_path, log_path=tmp_path / "x.log")


@linux_only
def test_stop_child_and_sweep_end_the_child_and_its_grandchild_in_another_session(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    tracker = ProcessTracker()  # before the child: what already runs below this process is not tracked
    child = start_child(
        "parent",
        [sys.executable, "-c", PARENT, str(pid_file)],
        env=os.environ,
        cwd=tmp_path,
        log_path=tmp_path / "logs" / "parent.log",
        grace_seconds=5,
    )
    grandchild = 0
    try:
        assert wait_until(lambda: pid_file.is_file() and pid_file.read_text().isdigit(), 60)
        grandchild = int(pid_file.read_text())
        table = read_process_table()
        assert table[child.pid].pgid == child.pid  # its own process group
        assert table[grandchild].pgid == grandchild != child.pid  # out of reach of a signal to that group

        tracker.own(child.pid)
        tracker.snapshot()
        assert {child.pid, grandchild} <= set(tracker.running())

        stop_child(child)
        assert child.returncode == -signal.SIGTERM
        assert tracker.running() == [grandchild]  # the group signal did not reach it

        assert sweep(tracker, grace_seconds=0.5) == []
        assert not is_running(read_process_table().get(grandchild), tracker.seen[grandchild])
        assert (tmp_path / "logs" / "parent.log").read_text().startswith("--- ")
    finally:
        for pid in (child.pid, grandchild):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        child.process.wait(timeout=10)


def test_stop_signals_count_and_restore(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGHUP)
    signals = StopSignals()
    with signals.installed():
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_until(lambda: signals.requested, 5)
        assert signals.name == "SIGHUP" and not signals.hurry()
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_until(signals.hurry, 5)
    assert signal.getsignal(signal.SIGHUP) == before


def test_stop_child_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready' + '-now', flush=True); "
        + ("time.sleep(600)")
    )
    child = start_child(
        "stubborn",
        [sys.executable, "-c", stubborn],
        env=os.environ,
        cwd=tmp_path,
        log_path=tmp_path / "s.log",
        grace_seconds=0.5,
    )
    assert wait_until(lambda: "ready-now" in child.log_tail(), 60)  # the command line in the log says 'ready' + ...
    stop_child(child)
    assert child.returncode == -signal.SIGKILL


@linux_only
def test_a_process_started_before_the_tracker_is_never_its_to_stop(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tracker = ProcessTracker()
        tracker.snapshot()
        assert bystander.pid not in tracker.running()
        assert sweep(tracker, grace_seconds=0.1) == []
        assert bystander.poll() is None  # still running: a test session's Prefect server is such a bystander
    finally:
        bystander.kill()
        bystander.wait(timeout=10)
