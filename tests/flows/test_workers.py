"""Report runs on two real workers of one process pool, with the Prefect server and the state store on PostgreSQL.

Nothing is mocked: ``prefect server start`` on PostgreSQL (asyncpg), ``prefect deploy --all``, two
``prefect worker start`` processes (``tests/fixtures/workers.py``), and each flow run in the subprocess its worker
starts, delivering to the shared bucket folder and recording in the shared PostgreSQL ledger. Which worker ran a
flow run is read from Prefect's own record, the worker's ``prefect.worker.executed-flow-run`` event.

What is counted is counted from the bucket and the ledger, not taken from the runs' own reports.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bulletin.demo_data import ACCOUNT_MANAGERS, DEMO_END_DATE
from bulletin.models import Manifest
from bulletin.store import open_store, scheduled_run_key
from bulletin.store.ledger_queries import list_deliveries
from bulletin.store.ledger_schema import LedgerRow
from tasks.delivery.manifest import list_manifests
from tests.fixtures.prefect_postgres import PREFECT_POSTGRES_URL, flow_run_ids_in_database
from tests.fixtures.workers import WORKER_NAMES, WORKER_REPORT, PoolWorkers, worker_of

DEPLOYMENT = f"deliver-report/{WORKER_REPORT}"
AS_OF = {"as_of": DEMO_END_DATE.isoformat()}
RECIPIENTS = {manager[0] for manager in ACCOUNT_MANAGERS}
ONE_DELIVERY = {("csv", "s3")}  # the report's formats x channels: the s3 channel is the bucket folder here
ADHOC_RUNS = 6
FINAL_TIMEOUT_SECONDS = 300


@pytest.fixture
def client(pool_workers: PoolWorkers) -> Iterator[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: pool_workers.api_url}), get_client(sync_client=True) as sync:
        yield sync


def wait_final(client: Any, run_ids: Iterable[uuid.UUID], workers: PoolWorkers) -> dict[uuid.UUID, Any]:
    """Every run read back once it is in a final state."""
    pending, done = set(run_ids), {}
    deadline = time.monotonic() + FINAL_TIMEOUT_SECONDS
    while pending:
        for run_id in list(pending):
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                done[run_id] = run
                pending.discard(run_id)
        assert time.monotonic() < deadline, f"runs not final: {pending}\n{workers.log_tail()}"
        time.sleep(0.5)
    return done


def ledger(workers: PoolWorkers, run_keys: set[str]) -> list[LedgerRow]:
    with open_store(workers.state_url) as store:
        rows = list_deliveries(store, report_id=WORKER_REPORT, limit=10_000)
    return [row for row in rows if row.run_key in run_keys]


def bucket_files(workers: PoolWorkers) -> set[Path]:
    return {path for path in workers.bucket.rglob("*") if path.is_file()}


def assert_once_each(rows: list[LedgerRow], run_keys: set[str], workers: PoolWorkers) -> None:
    """One ``sent`` row per (run key, recipient, format, channel), none missing, each naming its own bucket file."""
    expected = {(key, r, f, c) for key in run_keys for r in RECIPIENTS for f, c in ONE_DELIVERY}
    keys = [(row.run_key, row.recipient, row.format, row.channel) for row in rows]
    assert sorted(keys) == sorted(expected)  # none missing, none twice
    assert {row.status.value for row in rows} == {"sent"}
    files = {Path(row.uri.removeprefix("file://")) for row in rows}
    assert len(files) == len(rows)  # one file per delivery
    assert files <= bucket_files(workers)


def test_two_workers_share_the_runs_of_one_pool(pool_workers: PoolWorkers, client: Any) -> None:
    from prefect.deployments import run_deployment

    before = bucket_files(pool_workers)
    runs = [run_deployment(DEPLOYMENT, parameters={"parameters": AS_OF}, timeout=0) for _ in range(ADHOC_RUNS)]
    final = wait_final(client, [run.id for run in runs], pool_workers)

    assert {run.state.type.value for run in final.values()} == {"COMPLETED"}, pool_workers.log_tail()
    assert {str(run.id) for run in runs} <= flow_run_ids_in_database(PREFECT_POSTGRES_URL)
    by_worker = {run_id: worker_of(client, run_id) for run_id in final}
    assert set(by_worker.values()) == set(WORKER_NAMES), by_worker

    # A run started by hand is its own run: its ledger key is its flow-run id.
    run_keys = {f"adhoc-{run.id}" for run in runs}
    rows = ledger(pool_workers, run_keys)
    assert_once_each(rows, run_keys, pool_workers)
    assert bucket_files(pool_workers) - before == {Path(row.uri.removeprefix("file://")) for row in rows}


def schedule_one_slot_twice(client: Any, slot: datetime) -> list[Any]:
    """Two auto-scheduled runs of the deployment for ``slot``, made by the server's scheduler code.

    The deployment gets two identical schedules (as a schedule left behind by an earlier deploy next to the new one,
    or a report deployed under two names) that fire only at ``slot``; the server's backfill then makes one run per
    schedule for the slot, each with the schedule's parameters.
    """
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.schedules import CronSchedule

    deployment = client.read_deployment_by_name(DEPLOYMENT)
    cron = f"{slot.minute} {slot.hour} {slot.day} {slot.month} *"
    for _ in range(2):
        client.create_deployment_schedules(
            deployment.id, [(CronSchedule(cron=cron, timezone="UTC"), True)], parameters={"parameters": AS_OF}
        )
    response = client.request(
        "POST",
        "/deployments/{id}/schedule",
        path_params={"id": deployment.id},
        json={"start_time": slot.isoformat(), "end_time": slot.isoformat()},
    )
    response.raise_for_status()
    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
    return [run for run in runs if run.auto_scheduled and run.expected_start_time == slot]


def outcomes_by_delivery(manifests: list[Manifest]) -> dict[tuple[str, str, str], dict[str, tuple[str, str | None]]]:
    """(recipient, format, channel) -> run id -> (outcome, note), over every manifest."""
    found: dict[tuple[str, str, str], dict[str, tuple[str, str | None]]] = {}
    for manifest in manifests:
        for delivery in manifest.deliveries:
            for artifact in delivery.artifacts:
                key = (delivery.recipient, artifact.format, artifact.channel)
                found.setdefault(key, {})[manifest.run_id] = (artifact.outcome, artifact.note)
    return found


def test_a_double_start_of_one_scheduled_slot_delivers_once_across_workers(
    pool_workers: PoolWorkers, client: Any
) -> None:
    before = bucket_files(pool_workers)
    slot = datetime.now(UTC).replace(second=0, microsecond=0)
    runs = schedule_one_slot_twice(client, slot)
    assert len(runs) == 2, runs
    final = wait_final(client, [run.id for run in runs], pool_workers)

    assert {worker_of(client, run_id) for run_id in final} == set(WORKER_NAMES)
    run_key = scheduled_run_key(WORKER_REPORT, slot, AS_OF)
    rows = ledger(pool_workers, {run_key})
    assert_once_each(rows, {run_key}, pool_workers)
    assert bucket_files(pool_workers) - before == {Path(row.uri.removeprefix("file://")) for row in rows}
    run_ids = {str(run_id) for run_id in final}
    assert {row.run_id for row in rows} <= run_ids

    # Each run tells the truth about every delivery: one of the two sent it, the other says it was sent already
    # (under this run key) or that the other run is delivering it now.
    saved = list_manifests(pool_workers.home / "manifests", report_id=WORKER_REPORT)
    manifests = [m for m in saved if m.run_id in run_ids]
    assert {m.run_key for m in manifests} == {run_key} and len(manifests) == 2
    by_delivery = outcomes_by_delivery(manifests)
    assert set(by_delivery) == {(r, f, c) for r in RECIPIENTS for f, c in ONE_DELIVERY}
    sent_by = {(row.recipient, row.format, row.channel): row.run_id for row in rows}
    for key, per_run in by_delivery.items():
        assert set(per_run) == run_ids, key
        sender = sent_by[key]
        (other,) = run_ids - {sender}
        assert per_run[sender][0] == "sent", (key, per_run)
        outcome, note = per_run[other]
        assert outcome in {"already_sent", "in_progress"}, (key, per_run)
        names = run_key if outcome == "already_sent" else sender
        assert names in (note or ""), (key, note)
