"""A large run's worker process: lanes (tasks/delivery/lanes.py) in a process of their own, which never imports
Prefect.

The flow starts it as ``python -m tasks.delivery.worker FD`` (``WorkerProcess``), where FD is its end of a socket
pair. Over it the flow sends the run's plan, the services' spec, the audience and the lanes' numbers, then
``(lane, index)`` for each recipient it hands a lane and ``(lane, None)`` to stop one. The worker sends the lanes'
messages (tasks/delivery/spread.py: ``("ready", lane)``, ``("done", ...)``), ``("log", level, text)`` for what its
lanes log, and ``("exit", made)`` at the end.

Why not Prefect's ProcessPoolTaskRunner, as until issue 14: a task run in a process needs Prefect there. Importing
it, and multiprocessing's re-import of the flow's main module (``prefect.engine`` in a deployment run), made a worker
take about 2 s of a core before its first delivery; this one takes about 1 s. Its lanes log to the flow run's log,
and the flow's log names them ("Deliveries per lane: ... process 1.1 ...").

If the flow's process goes away, the worker reads the end of the socket and stops its lanes; if the worker dies, the
flow reads the end and gives the recipients its lanes held to the others (the ledger's leases make that safe).
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the worker reads its first message before it imports anything heavy
    from bulletin.models import Recipient
    from tasks.delivery.plan import DeliveryPlan
    from tasks.delivery.services import ServicesSpec

#: Seconds the flow waits for a worker process to exit once its lanes were told to stop, before it kills it.
EXIT_SECONDS = 30.0


class _Sender:
    """One end of the socket, shared by threads: whole messages, one at a time; a closed peer is not an error."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    def put(self, message: Any, block: bool = True, timeout: float | None = None) -> None:
        del block, timeout  # a Sink (tasks/delivery/spread.py): sending never waits for room
        try:
            with self._lock:
                self._connection.send(message)
        except (OSError, ValueError):  # the other process is gone: what it would have read is lost with it
            pass


class _LaneSink:
    """What the dispatcher puts in a worker lane's queue, sent as ``(lane, index)`` once the worker has the run."""

    def __init__(self, sender: _Sender, lane: int, started: threading.Event) -> None:
        self._sender, self._lane, self._started = sender, lane, started

    def put(self, index: Any, block: bool = True, timeout: float | None = None) -> None:
        del block, timeout
        self._started.wait()
        self._sender.put((self._lane, index))


class WorkerProcess:
    """The flow's side of one worker process: its lanes' queues (``sinks``), and a thread that puts their messages
    on ``reports`` and, once the worker has gone, ``("ended", lane)`` for each of its lanes."""

    def __init__(
        self,
        plan: DeliveryPlan,
        spec: ServicesSpec,
        audience: list[Recipient],
        lanes: list[int],
        reports: Any,
        log: Callable[[int, str], None],
        env: Mapping[str, str],
    ) -> None:
        """``env``: what the worker's environment adds to this process's, which wins (the flow passes its Prefect
        settings, so a Prefect Secret block a setting names is read from the same API)."""
        self.lanes, self.made, self._reports, self._log = lanes, 0, reports, log
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self.process = subprocess.Popen(  # our own interpreter and module: no shell, no user input
                [sys.executable, "-m", "tasks.delivery.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env={**env, **os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            )
            self._connection = Connection(os.dup(ours.fileno()))
        self._sender = _Sender(self._connection)
        started = threading.Event()
        self.sinks = [_LaneSink(self._sender, lane, started) for lane in lanes]
        self._reader = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._read, (plan, spec, audience, lanes), started),
            name="bulletin-worker-reader",
            daemon=True,
        )
        self._reader.start()

    def _read(self, run: tuple[Any, ...], started: threading.Event) -> None:
        """Send the run (here, not in the flow's thread: a large audience fills the socket until the worker reads),
        then pass on the worker's messages until it has gone."""
        try:
            self._sender.put(run)
        finally:
            started.set()
        try:
            while True:
                message = self._connection.recv()
                if message[0] == "log":
                    self._logged(message[1], message[2])
                elif message[0] == "exit":
                    self.made = message[1]
                else:
                    self._reports.put(message)
        except (EOFError, OSError):
            pass
        finally:
            for lane in self.lanes:
                self._reports.put(("ended", lane))

    def _logged(self, level: int, text: str) -> None:
        try:
            self._log(level, text)
        except Exception:  # noqa: BLE001 - a log line that cannot be written must not stop the worker's reports
            return

    def error(self) -> str | None:
        """Why the worker stopped early, once it has: None if it exited cleanly."""
        code = self.process.poll()
        return None if code in (0, None) else f"a worker process exited with code {code}"

    def close(self, timeout: float = EXIT_SECONDS) -> None:
        """Wait for the worker to exit (its lanes were told to stop), killing it after ``timeout``."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout)
        self._connection.close()


class _Forward(logging.Handler):
    """Sends a worker's log records to the flow, which logs them in the flow run's log."""

    def __init__(self, sender: _Sender) -> None:
        super().__init__()
        self._sender = sender

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sender.put(("log", record.levelno, self.format(record)))
        except Exception:  # noqa: BLE001 - logging must never stop a lane
            self.handleError(record)


def main(argv: list[str]) -> int:
    """The worker process: read the run, run its lanes until the flow stops them, say how many it delivered."""
    connection = Connection(int(argv[0]))
    sender = _Sender(connection)
    plan, spec, audience, lanes = connection.recv()
    handler = _Forward(sender)
    handler.setFormatter(logging.Formatter("process lane: %(message)s"))
    logger = logging.getLogger("bulletin.worker")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    logging.getLogger().addHandler(_level(_Forward(sender), logging.WARNING))  # other modules' warnings and errors
    todo: dict[int, queue.SimpleQueue[Any]] = {lane: queue.SimpleQueue() for lane in lanes}
    threading.Thread(target=_receive, args=(connection, todo), name="bulletin-worker-receiver", daemon=True).start()

    from tasks.delivery.lanes import run_lanes  # after the handshake: the flow's dispatcher is not kept waiting
    from tasks.delivery.services import open_services

    try:
        with ExitStack() as stack:
            services = open_services(spec.settings, stack, workdir=spec.workdir, dry_run=spec.dry_run)
            made = run_lanes(plan, services, audience, [(lane, todo[lane], sender) for lane in lanes], logger)
    except Exception:  # the edge: say why in the flow run's log; the flow gives the lanes' recipients to the others
        logger.exception("the worker process stopped")
        return 1
    sender.put(("exit", made))
    return 0


def _level(handler: logging.Handler, level: int) -> logging.Handler:
    handler.setLevel(level)
    return handler


def _receive(connection: Connection, todo: dict[int, queue.SimpleQueue[Any]]) -> None:
    """Hand each ``(lane, index)`` to its lane; at the end of the socket (the flow is gone), stop every lane."""
    try:
        while True:
            lane, index = connection.recv()
            todo[lane].put(index)
    except (EOFError, OSError):
        for lane_queue in todo.values():
            lane_queue.put(None)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
