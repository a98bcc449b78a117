"""The I/O a delivery needs (warehouse, ledger, keys, channels), built from settings at the edge.

A run builds its services once in the flow's process. A large run also spreads its lanes over worker processes
(``BULLETIN_DELIVERY_PROCESSES``): a DuckDB connection, a SQLAlchemy engine or a boto3 client cannot be pickled, so
each worker process gets a ``ServicesSpec`` (settings and the run's work folder, which pickle) and opens its own
services from it once, for all its lanes (tasks/delivery/worker.py).
"""

from __future__ import annotations

import os
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

    settings: Settings
    workdir: Path
    dry_run: bool


def delivery_processes(setting: int | None, recipients: int) -> int:
    """Worker processes for a run beside the flow's own threads: none for small runs, else the setting.

    Unset: one per core beyond the first (the flow's process delivers too), and at least one.
    """
    if recipients < PROCESSES_FROM_RECIPIENTS:
        return 0
    if setting is None:
        return max(1, (os.cpu_count() or 1) - 1)
    return setting
