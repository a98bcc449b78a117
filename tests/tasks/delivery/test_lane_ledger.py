"""A lane's batched ledger writes (tasks/delivery/marks.py) keep exactly-once: the recipients it holds are claimed in
one transaction and the sent marks of stored files ride on its next write; a lane killed before writing them leaves
claims that lapse, and the run that takes them over finds every file, storing none twice. One recipient failing in a
batch fails only itself. Real lanes (``deliver_from``), the local bucket, the demo warehouse, the state store on SQLite
and (when configured) PostgreSQL."""

from __future__ import annotations

import logging
import queue
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bulletin.models import Delivery, DeliveryStatus, Recipient
from bulletin.settings import Settings
from bulletin.store import LedgerStatus, Store, list_deliveries
from tasks.delivery import marks
from tasks.delivery.channels import BucketChannel
from tasks.delivery.lanes import deliver_from
from tasks.delivery.services import DeliveryServices
from tests.tasks.delivery.test_registry import plan_for

LEASE = 60.0
AUDIENCE = [
    Recipient(ref=f"r{n}", email=f"r{n}@example.com", attributes={"account_id": f"ACC-000{n}"}) for n in (1, 2, 3)
]
LOG = logging.getLogger("lane-ledger-test")


class Killed(BaseException):
    """Stands for SIGKILL: no ``except Exception`` below records anything."""


@pytest.fixture
def settings(tmp_path: Path, demo_warehouse: Path, store_url: str) -> Settings:
    return Settings(home=tmp_path / "home", warehouse_url=str(demo_warehouse), database_url=store_url)


def run_lane(plan: Any, services: DeliveryServices, audience: list[Recipient]) -> list[Delivery]:
    """One lane given every recipient at once (the dispatcher's queue already full), then told to stop."""
    todo: queue.SimpleQueue[Any] = queue.SimpleQueue()
    reports: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for index in [*range(len(audience)), None]:
        todo.put(index)
    deliver_from(plan, services, audience, 0, todo, reports, LOG)
    done = [reports.get() for _ in range(reports.qsize())]
    return [m[3] for m in sorted((m for m in done if m[0] == "done"), key=lambda m: m[2])]


def stored(settings: Settings) -> list[str]:
    return sorted(p.name for p in settings.bucket_path.rglob("*") if p.is_file())


def count_writes(monkeypatch: pytest.MonkeyPatch, store: Store) -> list[int]:
    calls = [0]
    real = type(store).write

    def counted(self: Store, **options: Any) -> Any:
        calls[0] += 1
        return real(self, **options)

    monkeypatch.setattr(type(store), "write", counted)
    return calls


def test_a_lane_killed_before_writing_its_marks_loses_nothing_and_sends_nothing_twice(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, services: DeliveryServices
) -> None:
    store = services.store
    assert store is not None
    real_write = marks.write_batch

    def die_on_marks(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("sent"):
            raise Killed
        return real_write(*args, **kwargs)

    first = replace(plan_for(settings, ["s3"]), lease_seconds=LEASE)
    with monkeypatch.context() as patched:
        patched.setattr(marks, "write_batch", die_on_marks)
        with pytest.raises(Killed):
            run_lane(first, services, AUDIENCE)
    files = stored(settings)
    assert len(files) == 3, "every file was stored before the kill"
    rows = list_deliveries(store, report_id=first.report.id)
    assert {r.status for r in rows} == {LedgerStatus.PENDING} and all(r.uri for r in rows)

    # While the dead lane's leases run, another run leaves them alone; once they lapse it takes every one over.
    soon = datetime.now(UTC) + timedelta(seconds=LEASE / 2)
    rerun = replace(first, run_id="rerun0000002", started_at=soon)
    early = run_lane(rerun, replace(services, clock=lambda: soon), AUDIENCE)
    assert {a.outcome for d in early for a in d.artifacts} == {"in_progress"}
    later = datetime.now(UTC) + timedelta(seconds=LEASE + 1)
    rerun = replace(first, run_id="rerun0000003", started_at=later)
    deliveries = run_lane(rerun, replace(services, clock=lambda: later), AUDIENCE)
    assert [d.status for d in deliveries] == [DeliveryStatus.DELIVERED] * 3
    assert all("found in the store" in (a.note or "") for d in deliveries for a in d.artifacts)
    assert stored(settings) == files, "no second copy of any file"
    rows = list_deliveries(store, report_id=first.report.id)
    assert {(r.status, r.claimed_by) for r in rows} == {(LedgerStatus.SENT, "rerun0000003")}


def test_one_failure_in_a_batch_fails_only_itself_and_the_batch_saves_transactions(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, services: DeliveryServices
) -> None:
    store = services.store
    assert store is not None
    broken = Recipient(ref="broken", email="broken@example.com", attributes={})  # no account: its token is refused
    audience = [AUDIENCE[0], broken, AUDIENCE[1]]
    writes = count_writes(monkeypatch, store)
    deliveries = run_lane(plan_for(settings, ["s3"]), services, audience)
    assert [d.status for d in deliveries] == [DeliveryStatus.DELIVERED, DeliveryStatus.FAILED, DeliveryStatus.DELIVERED]
    rows = {r.recipient: r for r in list_deliveries(store, report_id="daily-account-orders")}
    assert {ref: r.status for ref, r in rows.items()} == {
        "r1": LedgerStatus.SENT,
        "broken": LedgerStatus.FAILED,
        "r2": LedgerStatus.SENT,
    }
    assert all(rows[ref].uri and rows[ref].sha256 for ref in ("r1", "r2"))
    assert len(stored(settings)) == 2
    # One claim for the three, one write of both storing intents, the failure, one write of both marks: 4, not 3 x 3.
    assert writes[0] <= 4, writes[0]


def test_a_chunks_storing_intents_are_one_durable_write_before_its_first_file_and_only_they_fsync(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, services: DeliveryServices
) -> None:
    store = services.store
    assert store is not None
    seen: list[tuple[bool, int, list[str]]] = []  # per write: durable, intents, files stored before it
    real_write = marks.write_batch

    def watched(*args: Any, **kwargs: Any) -> Any:
        seen.append((kwargs.get("durable", True), len(kwargs.get("intents", ())), stored(settings)))
        return real_write(*args, **kwargs)

    monkeypatch.setattr(marks, "write_batch", watched)
    deliveries = run_lane(plan_for(settings, ["s3"]), services, AUDIENCE)
    assert [d.status for d in deliveries] == [DeliveryStatus.DELIVERED] * 3
    announced = [(durable, n, before) for durable, n, before in seen if n]
    assert announced == [(True, 3, [])], "the three intents in one fsync'd commit, before any file is stored"
    others = [durable for durable, n, _ in seen if not n]
    assert others and not any(others), "the claims and the kept marks commit without fsync (docs/delivery.md)"
    rows = list_deliveries(store, report_id="daily-account-orders")
    assert {r.status for r in rows} == {LedgerStatus.SENT} and len({r.uri for r in rows}) == 3


@pytest.mark.parametrize("stored_before_kill", [0, 1, 2])
def test_a_lane_killed_between_its_chunks_intents_and_its_files_stores_each_file_once(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, services: DeliveryServices, stored_before_kill: int
) -> None:
    store = services.store
    assert store is not None
    real_store, real_write = BucketChannel.store, marks.write_batch
    puts, dead = [0], [False]

    def die_at_a_put(self: BucketChannel, *args: Any, **kwargs: Any) -> Any:
        if puts[0] == stored_before_kill:
            dead[0] = True
            raise Killed
        puts[0] += 1
        return real_store(self, *args, **kwargs)

    def nothing_after_death(*args: Any, **kwargs: Any) -> Any:
        if dead[0]:  # a killed process writes nothing more: not even the lane's last flush of its kept marks
            raise Killed
        return real_write(*args, **kwargs)

    first = replace(plan_for(settings, ["s3"]), lease_seconds=LEASE)
    with monkeypatch.context() as patched:
        patched.setattr(BucketChannel, "store", die_at_a_put)
        patched.setattr(marks, "write_batch", nothing_after_death)
        with pytest.raises(Killed):
            run_lane(first, services, AUDIENCE)
    assert len(stored(settings)) == stored_before_kill
    rows = list_deliveries(store, report_id=first.report.id)
    assert {r.status for r in rows} == {LedgerStatus.PENDING} and all(r.uri for r in rows), "every intent written"

    later = datetime.now(UTC) + timedelta(seconds=LEASE + 1)
    rerun = replace(first, run_id="rerun0000004", started_at=later)
    deliveries = run_lane(rerun, replace(services, clock=lambda: later), AUDIENCE)
    assert [d.status for d in deliveries] == [DeliveryStatus.DELIVERED] * 3
    notes = [a.note or "" for d in deliveries for a in d.artifacts]
    assert sum("found in the store" in n for n in notes) == stored_before_kill, "the stored ones are found"
    assert len(stored(settings)) == 3, "each recipient's file stored once, whatever the kill interrupted"
    rows = list_deliveries(store, report_id=first.report.id)
    assert {(r.status, r.claimed_by) for r in rows} == {(LedgerStatus.SENT, "rerun0000004")}
