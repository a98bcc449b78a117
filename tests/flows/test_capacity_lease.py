"""The report-run slot's lease (tasks/delivery/capacity.py ``_slot``) against the session's real Prefect API: a short
run releases its slot with one call and never renews; a long one renews its lease; nothing is left held."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

from tasks.delivery import capacity

pytestmark = pytest.mark.usefixtures("prefect_api")
LIMIT = "bulletin-test-lease"


@pytest.fixture
def renewals(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Counts the lease renewals the real client makes (each still reaches the API)."""
    seen: list[float] = []
    real = SyncPrefectClient.renew_concurrency_lease

    def counting(self: SyncPrefectClient, *args: Any, **kwargs: Any) -> Any:
        seen.append(time.monotonic())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SyncPrefectClient, "renew_concurrency_lease", counting)
    with get_client(sync_client=True) as client:
        capacity.ensure_run_limit(client, 1, name=LIMIT)
    yield seen
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name(LIMIT)


def _active_slots() -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(LIMIT).active_slots


def _renewers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("bulletin-slot-lease-") and t.is_alive()]


def test_a_short_run_holds_and_releases_its_slot_without_renewing_its_lease(renewals: list[float]) -> None:
    release = capacity._slot(LIMIT, None)
    assert _active_slots() == 1
    assert len(_renewers()) == 1
    release()
    assert _active_slots() == 0
    assert renewals == []  # Prefect's own concurrency() renews at once, and its exit waits for that renewal
    deadline = time.monotonic() + 5
    while _renewers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _renewers() == []


def test_a_long_run_renews_its_lease_until_it_ends(renewals: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capacity, "RENEW_EVERY_SECONDS", 0.2)
    release = capacity._slot(LIMIT, None)
    deadline = time.monotonic() + 30
    while len(renewals) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _active_slots() == 1
    release()
    assert len(renewals) >= 2
    assert _active_slots() == 0


def test_a_slot_of_a_limit_that_does_not_exist_is_refused() -> None:
    with pytest.raises(ConcurrencySlotAcquisitionError):
        capacity._slot("bulletin-test-no-such-limit", None)


def test_a_slot_released_soon_is_free_before_its_block_ends_and_released_once(renewals: list[float]) -> None:
    """What a run does once its deliveries are done: the slot goes back from a background thread while the run
    writes its manifest and events; the block's end waits for that release and does not release again."""
    logger = logging.getLogger("capacity-test")
    with capacity.report_run_slot(1, logger=logger, name=LIMIT) as held:
        assert _active_slots() == 1
        held.release_soon()
        held.release_soon()  # asked twice: released once
        deadline = time.monotonic() + 10
        while _active_slots() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _active_slots() == 0, "free while the block still runs"
        with capacity.report_run_slot(1, logger=logger, name=LIMIT):  # the next run gets it at once
            assert _active_slots() == 1
    assert _active_slots() == 0
    assert renewals == []


def test_a_slot_never_released_early_is_released_when_its_block_fails(renewals: list[float]) -> None:
    held_inside: list[int] = []

    def broken_run() -> None:
        with capacity.report_run_slot(1, logger=logging.getLogger("capacity-test"), name=LIMIT):
            held_inside.append(_active_slots())
            raise RuntimeError("the run broke")

    with pytest.raises(RuntimeError):
        broken_run()
    assert held_inside == [1]
    assert _active_slots() == 0
