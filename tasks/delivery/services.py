"""The I/O a delivery needs (warehouse, ledger, keys, channels), built from settings at the edge.

A run builds its services once in the flow's process. A large run also spreads its lanes over worker processes
(``BULLETIN_DELIVERY_PROCESSES``): a DuckDB connection, a SQLAlchemy engine or a boto3 client cannot be pickled, so
each worker process gets a ``ServicesSpec`` (settings and the run's work folder, which pickle) and builds its own
services from it once, when its first lane starts, and keeps them until the process ends.
"""

from __future__ import annotations

import atexit
import os
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bulletin.clock import Clock, utc_now
from bulletin.datasets import DatasetSpec, load_datasets
from bulletin.settings import Settings
from bulletin.store import Store, open_store
from tasks.delivery.registry import Channels
from tasks.tokens import KeySet, load_keyset
from tasks.warehouse import Warehouse

#: A run has lanes in worker processes only when it has at least this many recipients. A worker process cost 3-5 s
#: to start on 2 cores when it imported Prefect, and about 300 MB: at 200 recipients it saved nothing, at 1,000 about
#: a seventh of the run (docs/benchmarks.md, "Delivery to S3"). Without Prefect (tasks/delivery/worker.py) it takes
#: about 1 s; the threshold was not measured again.
PROCESSES_FROM_RECIPIENTS = 500
#: DuckDB threads for a run's queries. A run queries from several lanes at once, each for one recipient's few
#: thousand rows: one thread per query used about 40 % less CPU than DuckDB's default of one per core (1.8 against
#: 3.0 ms per 1,000-row query on 2 cores, docs/benchmarks.md), and a large result is paced by its writer anyway.
QUERY_THREADS = 1


@dataclass
class DeliveryServices:
    """The I/O a delivery needs, built once per run (per process) at the edge and shared by its tasks."""

    keyset: KeySet
    datasets: dict[str, DatasetSpec]
    warehouse: Warehouse
    channels: Channels  # the registry's channels, opened per batch of recipients (tasks/delivery/registry.py)
    store: Store | None  # None only for a dry run, which records nothing
    clock: Clock
    workdir: Path


def open_services(
    settings: Settings, stack: ExitStack, *, workdir: Path, dry_run: bool, keyset: KeySet | None = None
) -> DeliveryServices:
    """Open a run's services; ``stack`` closes them. The ledger is not migrated here: the flow does that once."""
    warehouse = stack.enter_context(Warehouse(settings.warehouse, duckdb_threads=QUERY_THREADS))
    store = None if dry_run else stack.enter_context(open_store(settings.database))
    return DeliveryServices(
        keyset=keyset if keyset is not None else load_keyset(settings),
        datasets=load_datasets(settings.datasets_dir),
        warehouse=warehouse,
        channels=Channels(settings),
        store=store,
        clock=utc_now,
        workdir=workdir,
    )


@dataclass(frozen=True)
class ServicesSpec:
    """What a worker process needs to build a run's services itself (picklable, unlike the services)."""

    run_id: str
    settings: Settings
    workdir: Path
    dry_run: bool


_lock = threading.Lock()
_current: tuple[str, ExitStack, DeliveryServices] | None = None


def services_for(spec: ServicesSpec) -> DeliveryServices:
    """This process's services for the spec's run, opened on first use and closed when the process exits.

    A worker process serves one run at a time: a lane of another run closes the earlier run's services first.
    """
    global _current
    with _lock:
        if _current is not None and _current[0] == spec.run_id:
            return _current[2]
        _close_current()
        stack = ExitStack()
        try:
            services = open_services(spec.settings, stack, workdir=spec.workdir, dry_run=spec.dry_run)
        except BaseException:
            stack.close()
            raise
        _current = (spec.run_id, stack, services)
        return services


def _close_current() -> None:
    global _current
    if _current is not None:
        _current[1].close()
        _current = None


atexit.register(_close_current)


def delivery_processes(setting: int | None, recipients: int) -> int:
    """Worker processes for a run beside the flow's own threads: none for small runs, else the setting.

    Unset: one per core beyond the first (the flow's process delivers too), and at least one.
    """
    if recipients < PROCESSES_FROM_RECIPIENTS:
        return 0
    if setting is None:
        return max(1, (os.cpu_count() or 1) - 1)
    return setting
