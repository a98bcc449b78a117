"""A live delivery keeps its ledger claim past the short lease (tasks/delivery/leases.py); a claim another run took
over is neither sent on nor recorded over the other run's. Real services: the demo warehouse, the state store on
SQLite, the local bucket; a throwaway channel registered the way tests/tasks/delivery/test_registry.py does."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bulletin.models import DeliveryStatus
from bulletin.settings import Settings
from bulletin.store import ClaimOutcome, ClaimResult, LedgerStatus, Store, claim, list_deliveries
from tasks.delivery.channels import Parcel, Receipt
from tasks.delivery.deliver import deliver_recipient
from tasks.delivery.leases import LeaseKeeper
from tasks.delivery.services import DeliveryServices
from tests.tasks.delivery.test_registry import ANA, plan_for, register

LEASE = 1.5
#: Another run's claim on one of a dead worker's deliveries (the recipient added per claim).
RIVAL = {
    "run_key": "seam-1",
    "report_id": "daily-account-orders",
    "run_id": "otherrun0001",
    "format": "csv",
    "channel": "s3",
}


@pytest.fixture
def settings(tmp_path: Path, demo_warehouse: Path) -> Settings:
    return Settings(home=tmp_path / "home", warehouse_url=str(demo_warehouse))


def rival_claim(store: Store, *, now: datetime, run_id: str = "otherrun0001") -> ClaimResult:
    return claim(
        store,
        run_key="seam-1",
        report_id="daily-account-orders",
        run_id=run_id,
        recipient="ana",
        format="csv",
        channel="sftp",
        lease_seconds=LEASE,
        now=now,
    )


class Snail:
    """A throwaway channel slower than the lease: waits ``seconds``, running ``meanwhile`` first, then carries."""

    name = "sftp"

    def __init__(self, loft: Path, seconds: float, meanwhile: object = None) -> None:
        self.loft, self.seconds, self.meanwhile = loft, seconds, meanwhile

    def send(self, parcel: Parcel, receipt: Receipt) -> None:
        if callable(self.meanwhile):
            self.meanwhile()
        time.sleep(self.seconds)
        for file in parcel.files:
            target = self.loft / f"{parcel.recipient.ref}-{file.filename}"
            target.write_bytes(file.path.read_bytes())
            receipt.sent(file, target.as_uri())

    def close(self) -> None:
        pass


def test_a_delivery_slower_than_the_lease_keeps_its_claim_and_sends_once(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, services: DeliveryServices, tmp_path: Path
) -> None:
    store = services.store
    assert store is not None
    register(monkeypatch, Snail(tmp_path, seconds=2.5 * LEASE))
    rival: list[ClaimOutcome] = []

    def claim_after_the_lease() -> None:
        time.sleep(1.5 * LEASE)  # well past the first lease: only renewals keep the claim
        rival.append(rival_claim(store, now=datetime.now(UTC)).outcome)

    watcher = threading.Thread(target=claim_after_the_lease)
    watcher.start()
    plan = replace(plan_for(settings, ["sftp"]), lease_seconds=LEASE)
    delivery = deliver_recipient(plan, services, ANA)
    watcher.join()
    assert rival == [ClaimOutcome.IN_PROGRESS]
    assert delivery.status is DeliveryStatus.DELIVERED
    assert len(list(tmp_path.glob("ana-*"))) == 1
    (row,) = list_deliveries(store, recipient="ana")
    assert (row.status, row.attempts, row.claimed_by) == (LedgerStatus.SENT, 1, "seamrun00001")
    assert rival_claim(store, now=datetime.now(UTC)).outcome is ClaimOutcome.ALREADY_SENT


def test_a_claim_taken_over_is_not_recorded_as_sent_over_the_new_claimer(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, services: DeliveryServices, tmp_path: Path
) -> None:
    store = services.store
    assert store is not None
    # The rival sees a lapsed lease (this process paused for a whole lease, say) and takes the row over.
    register(monkeypatch, Snail(tmp_path, 0.1, lambda: rival_claim(store, now=datetime.now(UTC) + timedelta(hours=1))))
    delivery = deliver_recipient(replace(plan_for(settings, ["sftp"]), lease_seconds=LEASE), services, ANA)
    (artifact,) = delivery.artifacts
    assert artifact.outcome == "in_progress" and "took the delivery over" in (artifact.note or "")
    (row,) = list_deliveries(store, recipient="ana")
    assert (row.status, row.attempts, row.claimed_by) == (LedgerStatus.PENDING, 2, "otherrun0001")


def test_the_keeper_reports_a_claim_another_run_took_and_stops_cleanly(
    services: DeliveryServices, caplog: pytest.LogCaptureFixture
) -> None:
    store = services.store
    assert store is not None
    now = datetime.now(UTC)
    mine = rival_claim(store, now=now, run_id="seamrun00001")
    with LeaseKeeper(store, lease_seconds=LEASE, clock=lambda: datetime.now(UTC)) as keeper:
        with keeper.holding([mine]):
            keeper.renew_all()
            assert not keeper.lost(mine)
            rival_claim(store, now=now + timedelta(hours=1))
            with caplog.at_level(logging.WARNING, logger="tasks.delivery.leases"):
                keeper.renew_all()
            assert keeper.lost(mine)
            assert "another run took it over" in caplog.text
        assert not keeper.lost(mine), "released with the block"
    thread = keeper._thread
    assert thread is not None and not thread.is_alive()


CLAIMER = """
import sys, time
from datetime import UTC, datetime
from bulletin.store import claim, open_store
from tasks.delivery.leases import LeaseKeeper
store = open_store(sys.argv[1])
lease = float(sys.argv[2])
claims = [
    claim(store, run_key="seam-1", format="csv", channel="s3", recipient=name, report_id="daily-account-orders",
          run_id="deadrun00001", lease_seconds=lease, now=datetime.now(UTC))
    for name in ("ana", "ben", "cy")
]
keeper = LeaseKeeper(store, lease_seconds=lease, clock=lambda: datetime.now(UTC))
with keeper.holding(claims):
    print("claimed", flush=True)
    time.sleep(600)
"""


def test_a_worker_killed_with_sigkill_frees_its_claims_after_the_lease_and_not_before(
    store_url: str, store: Store
) -> None:
    lease, names = 2.0, ("ana", "ben", "cy")

    def outcomes() -> dict[str, ClaimResult]:
        return {n: claim(store, **{**RIVAL, "recipient": n}, lease_seconds=lease, now=datetime.now(UTC)) for n in names}

    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, store_url, str(lease)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "claimed"
        time.sleep(1.5 * lease)  # alive past its first lease: its keeper renews, so nobody else may claim
        assert {c.outcome for c in outcomes().values()} == {ClaimOutcome.IN_PROGRESS}
        child.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        child.wait(timeout=10)
    finally:
        child.kill()
    assert child.returncode == -signal.SIGKILL
    assert {c.outcome for c in outcomes().values()} == {ClaimOutcome.IN_PROGRESS}, "not before the lease runs out"
    time.sleep(max(0.0, lease + 0.3 - (time.monotonic() - killed)))
    taken = outcomes()
    assert {(c.outcome, c.row.attempts, c.row.claimed_by) for c in taken.values()} == {
        (ClaimOutcome.CLAIMED, 2, "otherrun0001")
    }
