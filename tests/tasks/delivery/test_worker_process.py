"""A large run's worker process (tasks/delivery/worker.py): a real ``python -m tasks.delivery.worker`` process,
driven by the real dispatcher, delivering to the local bucket from the demo warehouse with the state store on SQLite
and (when configured) PostgreSQL. It never imports Prefect; it delivers every recipient it is given once; killed
mid-run, it leaves its recipients to the other lanes and no file is stored twice."""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bulletin.models import Delivery, DeliveryStatus, Recipient
from bulletin.settings import Settings
from tasks.delivery.lanes import deliver_from
from tasks.delivery.services import DeliveryServices, ServicesSpec
from tasks.delivery.spread import Dispatcher, dispatch
from tasks.delivery.worker import WorkerProcess
from tasks.tokens import load_keyset
from tests.tasks.delivery.test_registry import plan_for

AUDIENCE = [
    Recipient(ref=f"r{n:02d}", email=f"r{n}@example.com", attributes={"account_id": f"ACC-{n % 9 + 1:04d}"})
    for n in range(24)
]
LOG = logging.getLogger("worker-process-test")


@pytest.fixture
def settings(tmp_path: Path, demo_warehouse: Path, store_url: str) -> Settings:
    settings = Settings(home=tmp_path / "home", warehouse_url=str(demo_warehouse), database_url=store_url)
    load_keyset(settings, create=True)  # the worker reads the keys file, as a deployment's worker would
    return settings


def stored(settings: Settings) -> list[str]:
    return sorted(str(p.relative_to(settings.bucket_path)) for p in settings.bucket_path.rglob("*") if p.is_file())


def spec_of(settings: Settings, services: DeliveryServices) -> ServicesSpec:
    return ServicesSpec(settings=settings, workdir=services.workdir, dry_run=False)


def run_worker(
    plan: Any, spec: ServicesSpec, logged: list[tuple[int, str]]
) -> tuple[WorkerProcess, Dispatcher[Delivery]]:
    """One worker process with two lanes, fed every recipient by the real dispatcher until it is done or stranded."""
    reports: queue.SimpleQueue[Any] = queue.SimpleQueue()
    worker = WorkerProcess(plan, spec, AUDIENCE, [0, 1], reports, lambda *m: logged.append(m), {})
    dispatcher: Dispatcher[Delivery] = Dispatcher(len(AUDIENCE), 2)
    try:
        dispatch(dispatcher, worker.sinks, reports, clock=lambda: 0.0, on_result=lambda *_: None)
    finally:
        worker.close()
    return worker, dispatcher


def test_the_worker_process_imports_no_prefect() -> None:
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, tasks.delivery.worker, tasks.delivery.lanes, tasks.delivery.services;"
         "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert imported.stdout.strip() == "[]"


def test_a_worker_process_delivers_each_recipient_it_is_given_once(
    settings: Settings, services: DeliveryServices
) -> None:
    logged: list[tuple[int, str]] = []
    worker, dispatcher = run_worker(plan_for(settings, ["s3"]), spec_of(settings, services), logged)
    assert worker.process.returncode == 0 and worker.error() is None
    assert worker.made == len(AUDIENCE) == sum(dispatcher.per_lane)
    assert all(d is not None and d.status is DeliveryStatus.DELIVERED for d in dispatcher.results)
    assert len(stored(settings)) == len(AUDIENCE), "one file per recipient"
    assert not [m for m in logged if m[0] >= logging.ERROR], logged


def test_a_killed_worker_process_leaves_its_recipients_to_the_other_lanes(
    settings: Settings, services: DeliveryServices
) -> None:
    plan = replace(plan_for(settings, ["s3"]), lease_seconds=600.0)
    reports: queue.SimpleQueue[Any] = queue.SimpleQueue()
    killed, began = threading.Event(), threading.Event()

    class Killing(queue.SimpleQueue[Any]):
        """The dispatcher's queue: starts the flow's lane once the worker is ready (so the worker gets recipients
        first), and kills the worker once one of its lanes has delivered."""

        def get(self, block: bool = True, timeout: float | None = None) -> Any:
            message = reports.get(block, timeout)
            if message[0] == "ready" and message[1] > 0 and not began.is_set():
                began.set()
                lane.start()
            if message[0] == "done" and message[1] > 0 and not killed.is_set():
                os.kill(worker.process.pid, signal.SIGKILL)
                killed.set()
            return message

    worker = WorkerProcess(plan, spec_of(settings, services), AUDIENCE, [1, 2], reports, lambda *_: None, {})
    todo: queue.SimpleQueue[Any] = queue.SimpleQueue()
    lane = threading.Thread(target=deliver_from, args=(plan, services, AUDIENCE, 0, todo, reports, LOG))
    dispatcher: Dispatcher[Delivery] = Dispatcher(len(AUDIENCE), 3)
    try:
        dispatch(dispatcher, [todo, *worker.sinks], Killing(), clock=lambda: 0.0, on_result=lambda *_: None)
    finally:
        lane.join(60)
        worker.close()
    assert killed.is_set()
    assert worker.error() == "a worker process exited with code -9"
    results = dispatcher.results
    assert all(d is not None for d in results), "every recipient has a result"
    delivered = [d for d in results if d is not None and d.status is DeliveryStatus.DELIVERED]
    held = [d for d in results if d is not None and d.status is not DeliveryStatus.DELIVERED]
    # What the dead worker had claimed stays its claim until the lease lapses: reported so, never sent twice.
    assert all({a.outcome for a in d.artifacts} == {"in_progress"} for d in held), held
    assert dispatcher.per_lane[0] > 0, "the flow's own lane took over"
    files = stored(settings)
    assert len(files) == len({f.split("/")[-2] for f in files}), "no recipient has two files"
    assert len(files) >= len(delivered)


def test_a_worker_process_that_cannot_start_says_why_in_the_run_log(
    settings: Settings, services: DeliveryServices, tmp_path: Path
) -> None:
    keyless = Settings(
        home=tmp_path / "no-keys", warehouse_url=settings.warehouse_url, database_url=settings.database_url
    )
    logged: list[tuple[int, str]] = []
    worker, dispatcher = run_worker(plan_for(settings, ["s3"]), spec_of(keyless, services), logged)
    assert dispatcher.stranded and len(dispatcher.unfinished()) == len(AUDIENCE), "nothing delivered, nothing lost"
    assert worker.error() == "a worker process exited with code 1"
    (level, text), *_ = logged
    assert level == logging.ERROR and "the worker process stopped" in text and "no signing keyset" in text
