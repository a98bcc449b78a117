"""The report-run cap (tasks/delivery/capacity.py) against the session's real Prefect API: a global concurrency limit
that deliver-report runs take one slot of around their delivery work."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from bulletin.demo_data import DEMO_END_DATE
from bulletin.models import Manifest, RunStatus
from bulletin.settings import PROJECT_ROOT
from flows.deliver_report import deliver_report
from tasks.delivery.capacity import HELD, LOG_KEY, RUN_LIMIT, SLOT_LABEL, WAITING, ensure_run_limit, is_waiting_for_slot

pytestmark = pytest.mark.usefixtures("prefect_api")
DAILY = yaml.safe_load((PROJECT_ROOT / "deployments/reports/daily-account-orders.yaml").read_text())
#: A safety net only: the test never waits this long unless the cap is broken.
STUCK_SECONDS = 120


class SlotWatch(logging.Handler):
    """Records every run's slot events in the order they happen.

    It also holds each run that has a slot until some run has had to wait and two runs hold slots, so the runs
    really overlap and the cap is seen at work. While they are held, it reads the waiting run's flow run back from
    the API and asks ``is_waiting_for_slot``, before either is let go. It overrides ``handle``, not ``emit``:
    ``Handler.handle`` holds the handler's lock around ``emit``, and a run held there would block every other run's
    log line.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.events: list[tuple[str, str]] = []
        self.waiting_seen_by_api: list[bool] = []
        self._overlap_seen = False
        self._changed = threading.Condition()

    def handle(self, record: logging.LogRecord) -> bool:
        event = getattr(record, LOG_KEY, None)
        if event is None:
            return True
        run_id = str(getattr(record, "flow_run_id", ""))
        with self._changed:
            self.events.append((run_id, event))
            self._changed.notify_all()
            if event == HELD:
                self._changed.wait_for(self._both_held_and_one_waits, timeout=STUCK_SECONDS)
                if not self.waiting_seen_by_api:
                    # Still under the lock: the other run holding a slot cannot go on (and free its slot for the
                    # waiting run) until the API has been asked, so the answer does not depend on timing.
                    self._check_the_waiting_run()
        return True

    def _still_waiting(self) -> list[str]:
        """Runs that said they wait and have no slot yet (a run slow to get a free slot on a busy machine says it
        waits too, then gets one: not the run to ask about)."""
        held = {run_id for run_id, event in self.events if event == HELD}
        return [run_id for run_id, event in self.events if event == WAITING and run_id not in held]

    def _both_held_and_one_waits(self) -> bool:
        """True from the first moment two runs hold slots while another still waits, and from then on."""
        self._overlap_seen = self._overlap_seen or (
            bool(self._still_waiting()) and [event for _, event in self.events].count(HELD) >= 2
        )
        return self._overlap_seen

    def _check_the_waiting_run(self) -> None:
        waiting_run = self._still_waiting()[0]
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(UUID(waiting_run))
        self.waiting_seen_by_api.append(is_waiting_for_slot(flow_run))

    def most_inside_at_once(self) -> int:
        inside = most = 0
        for _, event in self.events:
            inside += {HELD: 1, "releasing": -1}.get(event, 0)
            most = max(most, inside)
        return most


@pytest.fixture
def slot_watch() -> Iterator[SlotWatch]:
    watch = SlotWatch()
    logger = logging.getLogger("prefect.flow_runs")
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)


@pytest.fixture
def one_recipient_report(bulletin_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    folder = tmp_path / "reports"
    folder.mkdir()
    audience = {"recipients": [{"ref": "acc-1", "email": "acc1@example.com", "attributes": {"account_id": "ACC-0001"}}]}
    (folder / "daily-account-orders.yaml").write_text(yaml.safe_dump({**DAILY, "audience": audience}))
    monkeypatch.setenv("BULLETIN_REPORTS_DIR", str(folder))
    return "daily-account-orders"


def delete_run_limit() -> None:
    with get_client(sync_client=True) as client:
        with suppress(ObjectNotFound):
            client.delete_global_concurrency_limit_by_name(RUN_LIMIT)


def test_with_a_cap_of_two_four_runs_take_turns_and_all_complete(
    one_recipient_report: str, slot_watch: SlotWatch, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BULLETIN_MAX_CONCURRENT_RUNS", "2")
    delete_run_limit()  # the first run creates it: a missing limit must never mean "uncapped"

    def one_run(_: int) -> State[Any]:
        state = deliver_report(one_recipient_report, parameters={"as_of": DEMO_END_DATE.isoformat()}, return_state=True)
        assert isinstance(state, State)
        return state

    with ThreadPoolExecutor(max_workers=4) as pool:
        states = list(pool.map(one_run, range(4)))

    manifests = [s.result(raise_on_failure=False) for s in states]
    assert all(s.is_completed() for s in states), [s.message for s in states]
    assert all(isinstance(m, Manifest) and m.status is RunStatus.COMPLETED for m in manifests)
    assert len({m.run_id for m in manifests}) == 4
    runs = {run_id for run_id, _ in slot_watch.events}
    assert len(runs) == 4
    for run_id in runs:
        own = [event for r, event in slot_watch.events if r == run_id]
        assert own.count(HELD) == 1 and own.count("releasing") == 1, own
    assert slot_watch.most_inside_at_once() == 2
    assert [event for _, event in slot_watch.events].count(WAITING) >= 1
    assert slot_watch.waiting_seen_by_api and all(slot_watch.waiting_seen_by_api)
    # Waiting is not an error: Prefect logs a refused bounded try at ERROR, so none is made.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(RUN_LIMIT)
        waited = client.read_flow_run(UUID(next(r for r, e in slot_watch.events if e == WAITING)))
    assert limit.limit == 2 and limit.active_slots == 0  # every slot given back
    assert waited.labels.get(SLOT_LABEL) == HELD and not is_waiting_for_slot(waited)


def test_the_limit_follows_the_setting() -> None:
    delete_run_limit()
    with get_client(sync_client=True) as client:
        created = ensure_run_limit(client, 3)
        assert created.limit == 3 and created.active
        assert ensure_run_limit(client, 3).id == created.id
        changed = ensure_run_limit(client, 7)
        assert changed.id == created.id and changed.limit == 7
        assert client.read_global_concurrency_limit_by_name(RUN_LIMIT).limit == 7
    delete_run_limit()


def test_prefect_runs_uncapped_when_a_limit_does_not_exist_unless_strict() -> None:
    """The Prefect 3.8.8 behaviour tasks/delivery/capacity.py is built around; if this changes, revisit that module."""
    name = "bulletin-test-no-such-limit"
    entered = False
    with concurrency(name, occupy=1, strict=False):
        entered = True
    assert entered
    with pytest.raises(ConcurrencySlotAcquisitionError, match="must be created"):
        with concurrency(name, occupy=1, strict=True):
            pass
