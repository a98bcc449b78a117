"""Child processes of ``bulletin serve`` and everything they start in turn.

Each child runs in its own process group (a terminal's Ctrl-C reaches only the supervisor, which stops the children
in order) and is stopped with terminate, wait, kill. The worker starts each flow run in a session of its own, so a
signal to the worker's group never reaches them: the process table (Linux ``/proc``) is read every few seconds to
remember every descendant, and on Linux the supervisor is a child subreaper, so an orphaned grandchild is re-parented
to it rather than to init. The final sweep stops whatever of them is still alive.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from bulletin.errors import ConfigError

#: linux/prctl.h
_PR_SET_CHILD_SUBREAPER = 36
_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class ProcessInfo:
    """One line of the process table. ``start`` (clock ticks since boot) tells a reused pid from the original."""

    pid: int
    ppid: int
    pgid: int
    state: str
    start: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.start)


def parse_stat(text: str) -> ProcessInfo:
    """Parse ``/proc/<pid>/stat``. The command name is in parentheses and may itself hold spaces or ``)``."""
    pid_text, _, rest = text.partition(" (")
    fields = rest[rest.rindex(")") + 2 :].split()
    return ProcessInfo(
        pid=int(pid_text), ppid=int(fields[1]), pgid=int(fields[2]), state=fields[0], start=int(fields[19])
    )


def read_process_table(proc: Path = Path("/proc")) -> dict[int, ProcessInfo]:
    """Every process this machine shows in ``/proc``; empty where there is no ``/proc`` (macOS)."""
    table: dict[int, ProcessInfo] = {}
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if entry.name.isdigit():
            with suppress(OSError, ValueError, IndexError):  # it exited while we looked
                table[int(entry.name)] = parse_stat((entry / "stat").read_text())
    return table


def descendants(table: Mapping[int, ProcessInfo], root: int) -> set[int]:
    """Every process below ``root`` in ``table`` (children, grandchildren...), not ``root`` itself."""
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: set[int] = set()
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def is_running(info: ProcessInfo | None, start: int) -> bool:
    """Alive and still the same process: a zombie has exited; a different start time is a reused pid."""
    return info is not None and info.start == start and info.state not in ("Z", "X")


def become_subreaper() -> bool:
    """On Linux, make orphaned descendants re-parent to this process (so none escapes the final sweep)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


class ProcessTracker:
    """Remembers every descendant of this process it has seen, by pid and start time: only those started after
    the tracker was made. What already ran below this process (a test session's own servers, say) is not ours to
    stop."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}
        self._popen_pids: set[int] = set()
        table = read_process_table()
        self._before = {(pid, table[pid].start) for pid in descendants(table, os.getpid())}

    def own(self, pid: int) -> None:
        """A pid reaped by its Popen object: never ``waitpid`` it here, or Popen loses its exit code."""
        self._popen_pids.add(pid)

    def snapshot(self) -> dict[int, ProcessInfo]:
        table = read_process_table()
        for pid in descendants(table, os.getpid()):
            if (pid, table[pid].start) not in self._before:
                self.seen.setdefault(pid, table[pid].start)
        return table

    def running(self) -> list[int]:
        table = read_process_table()
        return sorted(pid for pid, start in self.seen.items() if is_running(table.get(pid), start))

    def reap(self) -> None:
        """Collect the exit status of orphans re-parented to us, so they do not linger as zombies."""
        for pid in list(self.seen):
            if pid not in self._popen_pids:
                with suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)

    def signal_running(self, sig: signal.Signals) -> None:
        table = read_process_table()
        for pid, start in self.seen.items():
            if is_running(table.get(pid), start):
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)


@dataclass
class Child:
    """A process we started, leader of its own process group, logging to ``log_path``."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    grace_seconds: float = 10.0
    returncode: int | None = field(default=None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def signal_group(self, sig: signal.Signals) -> None:
        # The group outlives its leader while any member lives: signal it even after the leader exited.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def log_tail(self, size: int = 8_192) -> str:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - size))
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""


def start_child(
    name: str,
    command: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    grace_seconds: float = 10.0,
    append: bool = True,
) -> Child:
    """Start ``command`` in a new session (its own process group), stdout and stderr to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab" if append else "wb") as log:
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {shlex.join(command)}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ConfigError(f"cannot start {name} ({command[0]}): {exc.strerror}", field="command") from exc
    return Child(name=name, process=process, log_path=log_path, grace_seconds=grace_seconds)


def wait_until(done: Callable[[], bool], timeout: float, *, hurry: Callable[[], bool] = lambda: False) -> bool:
    """Poll ``done`` until it is true (True), ``timeout`` passes or ``hurry`` says stop waiting (False)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline or hurry():
            return False
        time.sleep(_POLL_SECONDS)
    return True


def stop_child(child: Child, *, hurry: Callable[[], bool] = lambda: False) -> None:
    """SIGTERM to the child's group, up to its grace period, then SIGKILL to the group."""
    if child.poll() is None:
        child.signal_group(signal.SIGTERM)
        if not wait_until(lambda: child.poll() is not None, child.grace_seconds, hurry=hurry):
            child.signal_group(signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=10)
    child.returncode = child.poll()


def sweep(tracker: ProcessTracker, *, grace_seconds: float, hurry: Callable[[], bool] = lambda: False) -> list[int]:
    """Terminate, then kill, every descendant ever seen that still runs; returns the pids that survived."""
    tracker.snapshot()
    if tracker.running():
        tracker.signal_running(signal.SIGTERM)
        if not wait_until(lambda: not tracker.running(), grace_seconds, hurry=hurry):
            tracker.signal_running(signal.SIGKILL)
            wait_until(lambda: not tracker.running(), 5.0)
    tracker.reap()
    return tracker.running()


class StopSignals:
    """SIGINT (Ctrl-C), SIGTERM and SIGHUP ask the supervisor to stop; a second one asks it to stop now."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.count = 0
        self.name: str | None = None

    @property
    def requested(self) -> bool:
        return self.count > 0

    def hurry(self) -> bool:
        return self.count > 1

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.name = signal.Signals(signum).name

    @contextmanager
    def installed(self) -> Iterator[StopSignals]:
        previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
