"""Sharded runs on two real workers: one report's audience split into deliver-shard flow runs that both workers take.

As ``test_workers.py``: ``prefect server start`` on PostgreSQL, ``prefect deploy --all`` (the deliver-shard
deployment included), two ``prefect worker start`` processes sharing a PostgreSQL state store and a bucket folder,
with ``BULLETIN_SHARD_RECIPIENTS`` low enough that a 60-recipient report runs in three shards. Nothing is mocked; a
dead machine is a worker and its flow-run processes killed with SIGKILL, and Prefect's own heartbeat automation
(``bulletin deployments automations``) is what notices. What is counted is counted from the bucket and the ledger.

The worker-killing test comes last: it leaves the module one worker short.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bulletin.demo_data import DEMO_END_DATE
from bulletin.edge.automations import apply_automation, crash_silent_runs, crash_unstarted_runs
from bulletin.models import Manifest
from bulletin.settings import PROJECT_ROOT
from bulletin.store import open_store, run_rows
from bulletin.store.ledger_schema import LedgerRow
from tasks.delivery.manifest import manifest_file
from tasks.delivery.spread import RETRY_DELAYS
from tests.fixtures.workers import (
    WORKER_NAMES,
    WORKER_REPORT,
    PoolWorkers,
    descendants,
    kill_machine,
    running_workers,
    worker_of,
)

REPORT = "many-account-orders"
DEPLOYMENT = f"deliver-report/{REPORT}"
RECIPIENTS = [f"am-shard-{n:03d}" for n in range(1, 61)]
SHARD_SIZE = 20
AS_OF = {"as_of": DEMO_END_DATE.isoformat()}
#: Short enough that a dead shard's claims lapse before Prefect has noticed it died (the heartbeat wait below).
LEASE_SECONDS = 15
#: The crashed-run automation's wait after a heartbeat: more than the 30 s heartbeat interval, as the command needs.
CRASH_WITHIN_SECONDS = 45
#: The unstarted-run automation's wait after Pending: well above what a loaded 2-core machine takes to start a shard.
PENDING_WITHIN_SECONDS = 120
FINAL_TIMEOUT_SECONDS = 420


def sharded_reports(folder: Path) -> Path:
    """The daily account report for 60 account managers of their own (an inline audience), with no schedule."""
    folder.mkdir(parents=True, exist_ok=True)
    report = yaml.safe_load((PROJECT_ROOT / "deployments" / "reports" / f"{WORKER_REPORT}.yaml").read_text())
    report.pop("schedule", None)
    report["id"], report["title"] = REPORT, "Many account orders"
    report["audience"] = {
        "recipients": [
            {"ref": ref, "email": f"{ref}@example.com", "org": "acme", "attributes": {"account_id": f"ACC-{n:04d}"}}
            for n, ref in enumerate(RECIPIENTS, start=1)
        ]
    }
    (folder / f"{REPORT}.yaml").write_text(yaml.safe_dump(report))
    return folder


@pytest.fixture(scope="module")
def shard_workers(
    prefect_postgres_server: str, demo_warehouse: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PoolWorkers]:
    """Two workers of a pool of their own, each taking two flow runs at once: a run holds a slot while its shards
    run, so one slot each would leave a run waiting for shards no worker can take."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    workdir = tmp_path_factory.mktemp("shard-workers")
    settings = {
        "BULLETIN_SHARD_RECIPIENTS": str(SHARD_SIZE),
        "BULLETIN_CLAIM_LEASE_SECONDS": str(LEASE_SECONDS),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
    }
    with temporary_settings(updates={PREFECT_API_URL: prefect_postgres_server}):
        automations = [
            asyncio.run(apply_automation(automation))[1]
            for automation in (
                crash_silent_runs(CRASH_WITHIN_SECONDS),
                crash_unstarted_runs(PENDING_WITHIN_SECONDS),
            )
        ]
        try:
            reports = sharded_reports(workdir / "reports")
            with running_workers(
                prefect_postgres_server, demo_warehouse, workdir, reports, pool="bulletin-shards", limit=2, **settings
            ) as workers:
                yield workers
        finally:
            with get_client(sync_client=True) as client:
                for automation_id in automations:
                    client.delete_automation(automation_id)


@pytest.fixture
def client(shard_workers: PoolWorkers) -> Iterator[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: shard_workers.api_url}), get_client(sync_client=True) as sync:
        yield sync


def start_run(client: Any, **parameters: Any) -> Any:
    from prefect.deployments import run_deployment

    return run_deployment(DEPLOYMENT, parameters={"parameters": AS_OF, **parameters}, timeout=0)


def wait_final(client: Any, run_id: uuid.UUID, workers: PoolWorkers) -> Any:
    deadline = time.monotonic() + FINAL_TIMEOUT_SECONDS
    while True:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        assert time.monotonic() < deadline, f"run {run_id} not final: {run.state}\n{workers.log_tail()}"
        time.sleep(0.5)


def shard_runs(client: Any, parent: uuid.UUID) -> list[Any]:
    """The run's shards as the Prefect UI shows them: the flow runs whose parent is the run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    found = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]))
    )
    return sorted(found, key=lambda run: run.name)


def ledger(workers: PoolWorkers, run_id: uuid.UUID) -> list[LedgerRow]:
    with open_store(workers.state_url) as store:
        return run_rows(store, f"adhoc-{run_id}")


def files_of_run(workers: PoolWorkers, run_id: uuid.UUID) -> set[Path]:
    return {path for path in workers.bucket.rglob(f"*{run_id}*") if path.is_file()}


def assert_delivered_once(
    workers: PoolWorkers, run_id: uuid.UUID, recipients: list[str] = RECIPIENTS
) -> list[LedgerRow]:
    """Exactly one sent row and one file per recipient: none missing, none twice; the run's manifest says so."""
    rows = ledger(workers, run_id)
    assert sorted(row.recipient for row in rows) == recipients
    assert {(row.status.value, row.format, row.channel, row.run_id) for row in rows} == {
        ("sent", "csv", "s3", str(run_id))
    }
    assert {Path(row.uri.removeprefix("file://")) for row in rows} == files_of_run(workers, run_id)
    manifest = manifest_file(workers.home / "manifests", REPORT, str(run_id))
    saved = Manifest.model_validate_json(manifest.read_text())
    assert saved.status.value == "COMPLETED", saved.tally
    assert [d.recipient for d in saved.deliveries] == recipients
    assert {a.outcome for d in saved.deliveries for a in d.artifacts} == {"sent"}
    assert all(d.token_id and d.secure_filters for d in saved.deliveries)
    return rows


def test_a_large_run_is_delivered_in_shards_by_both_workers(shard_workers: PoolWorkers, client: Any) -> None:
    run = start_run(client)
    final = wait_final(client, run.id, shard_workers)

    assert final.state.type.value == "COMPLETED", (final.state.message, shard_workers.log_tail())
    shards = shard_runs(client, run.id)
    assert [s.name for s in shards] == [f"{REPORT}-shard-{n}-of-3-try-1" for n in (1, 2, 3)]
    assert {s.state.type.value for s in shards} == {"COMPLETED"}
    assert_delivered_once(shard_workers, run.id)
    # Both machines delivered: each worker ran a shard (the runs' processes were its children).
    assert len({s.infrastructure_pid for s in shards}) == 3
    assert {worker_of(client, s.id) for s in shards} == set(WORKER_NAMES)


def test_a_shard_that_failed_for_a_transient_reason_is_started_again(shard_workers: PoolWorkers, client: Any) -> None:
    # The run's folder in the bucket cannot be made (a file is in the way, as a full or missing disk would fail
    # it): every delivery of every shard's first attempt fails, after the retries each recipient gets inside its
    # shard; the folder is freed once they have all ended. 21 of the recipients: two shards, of 11 and 10.
    some = RECIPIENTS[: SHARD_SIZE + 1]
    blocker = shard_workers.bucket / "reports" / "acme" / "retried"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")
    run = start_run(client, output_prefix="retried", recipients=some)
    deadline = time.monotonic() + FINAL_TIMEOUT_SECONDS
    while True:
        first = [s for s in shard_runs(client, run.id) if s.name.endswith("-try-1")]
        if len(first) == 2 and all(s.state.is_final() for s in first):
            break
        assert time.monotonic() < deadline, shard_workers.log_tail()
        time.sleep(0.3)
    blocker.unlink()
    final = wait_final(client, run.id, shard_workers)

    assert {s.state.type.value for s in first} == {"FAILED"}
    assert final.state.type.value == "COMPLETED", (final.state.message, shard_workers.log_tail())
    retried = [s for s in shard_runs(client, run.id) if s.name.endswith("-try-2")]
    assert len(retried) == 2 and {s.state.type.value for s in retried} == {"COMPLETED"}
    rows = assert_delivered_once(shard_workers, run.id, some)
    # Each recipient's task tried 1 + len(RETRY_DELAYS) times in the first attempt of its shard, once in the second.
    assert {row.attempts for row in rows} == {len(RETRY_DELAYS) + 2}


def test_a_worker_killed_mid_shard_loses_nothing_and_sends_nothing_twice(
    shard_workers: PoolWorkers, client: Any
) -> None:
    run = start_run(client)
    victim, shard, sent_at_kill = kill_a_shard_worker(client, run.id, shard_workers)
    final = wait_final(client, run.id, shard_workers)

    assert 0 < sent_at_kill < SHARD_SIZE  # killed mid-shard: some of its recipients had their file, some not
    assert final.state.type.value == "COMPLETED", (final.state.message, shard_workers.log_tail())
    assert client.read_flow_run(shard.id).state.type.value == "CRASHED"  # Prefect's heartbeat automation saw it
    again = [s for s in shard_runs(client, run.id) if s.name == shard.name.replace("-try-1", "-try-2")]
    assert len(again) == 1 and again[0].state.type.value == "COMPLETED"
    rows = assert_delivered_once(shard_workers, run.id)
    assert max(row.attempts for row in rows) == 2, victim  # the dead shard's unfinished claims were taken over


def kill_a_shard_worker(client: Any, run_id: uuid.UUID, workers: PoolWorkers) -> tuple[str, Any, int]:
    """Find a shard running on the worker that is not running the run itself; as soon as the ledger has its first
    file sent, SIGKILL that worker and its flow-run processes. The worker's name, the shard's flow run and how many
    of its recipients the ledger had as sent just before the kill."""
    name, process, shard = _shard_away_from_parent(client, run_id, workers)
    refs = set(shard.parameters["recipients"])
    deadline = time.monotonic() + FINAL_TIMEOUT_SECONDS
    while True:
        sent = sum(r.recipient in refs and r.status.value == "sent" for r in ledger(workers, run_id))
        # At once, whatever the other shards are doing: one still Pending on the victim (taken, not yet started)
        # sends no heartbeat, and it is the unstarted-run automation that crashes it.
        if sent:
            kill_machine(process)
            return name, shard, sent
        assert time.monotonic() < deadline, workers.log_tail()
        time.sleep(0.005)


def _shard_away_from_parent(
    client: Any, run_id: uuid.UUID, workers: PoolWorkers
) -> tuple[str, subprocess.Popen[bytes], Any]:
    deadline = time.monotonic() + FINAL_TIMEOUT_SECONDS
    while True:
        assert time.monotonic() < deadline, workers.log_tail()
        parent = client.read_flow_run(run_id)
        shards = [s for s in shard_runs(client, run_id) if s.state.is_running() and s.infrastructure_pid]
        if parent.infrastructure_pid and shards:
            for name, process in workers.processes.items():
                below = set(descendants(process.pid))
                if _pid(parent.infrastructure_pid) in below:
                    continue
                mine = [s for s in shards if _pid(s.infrastructure_pid) in below]
                if mine:
                    return name, process, mine[0]
        time.sleep(0.05)


def _pid(infrastructure_pid: str) -> int:
    """Prefect records a flow run's process id, as ``pid`` or ``host:pid``."""
    return int(infrastructure_pid.rsplit(":", 1)[-1])
