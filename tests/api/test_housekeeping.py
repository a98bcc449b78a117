"""Housekeeping runs only when there is work: a real Prefect server (``prefect server start``), a real state store,
a real webhook receiver. The deployment sits on a work pool no worker polls, so every run counted is one the
housekeeper made; the test runs the one it makes with Prefect's engine, as a worker's subprocess would."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bulletin.edge.api.housekeeping import Chore, Housekeeper, webhooks_due
from bulletin.settings import Settings
from bulletin.store import Store, migrate, open_store
from bulletin.store.webhooks import add_endpoint, enqueue, get_message
from tests.fixtures.webhook_receiver import Receiver, running_receiver

#: The first retry of the default schedule comes 5 s after the first attempt.
RETRY_SECONDS = 5.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("BULLETIN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BULLETIN_DATABASE_URL", raising=False)
    monkeypatch.setenv("BULLETIN_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
    with open_store(Settings().database) as opened:
        migrate(opened)
        yield opened


@pytest.fixture
def client(prefect_server: str) -> Iterator[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    # The run's logs stay here: sent to the API, the last would be flushed after the session's server has stopped.
    updates = {PREFECT_API_URL: prefect_server, PREFECT_LOGGING_TO_API_ENABLED: False}
    with temporary_settings(updates=updates), get_client(sync_client=True) as sync_client:
        yield sync_client


@pytest.fixture
def chore(client: Any) -> Iterator[Chore]:
    """A deliver-webhooks deployment of its own (name and pool), as ``bulletin serve`` deploys it: no schedule."""
    from prefect.client.schemas.actions import WorkPoolCreate

    name = f"housekeeping-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    flow_id = client.create_flow_from_name("deliver-webhooks")
    deployment_id = client.create_deployment(
        flow_id, name, work_pool_name=name, entrypoint="flows/deliver_webhooks.py:deliver_webhooks"
    )
    try:
        yield Chore(f"deliver-webhooks/{name}", webhooks_due)
    finally:
        client.delete_deployment(deployment_id)
        client.delete_work_pool(name)


def runs_of(client: Any, chore: Chore) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployment = client.read_deployment_by_name(chore.deployment)
    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))


def test_no_work_no_runs_and_a_due_retry_gets_one_run_that_delivers_it(
    store: Store, client: Any, chore: Chore, receiver: Receiver
) -> None:
    start = datetime.now(UTC)
    clock = {"now": start}
    housekeeper = Housekeeper(store, clock=lambda: clock["now"], chores=(chore,))

    # Ten minutes of looks, every 10 s, with nothing due: not one run (the every-minute schedule made ten).
    for step in range(60):
        clock["now"] = start + timedelta(seconds=10 * step)
        assert housekeeper.look(chore) is None
    assert runs_of(client, chore) == []

    # A message whose retry is due in 5 s: nothing before its time, one run at it.
    add_endpoint(store, url=receiver.url("/retry"), event_types=["run.completed"], now=start)
    enqueued = datetime.now(UTC)
    (message,) = enqueue(store, event_type="run.completed", payload={"n": 1}, now=enqueued, delay_seconds=RETRY_SECONDS)
    clock["now"] = enqueued
    assert housekeeper.look(chore) is None
    time.sleep(RETRY_SECONDS + 0.1)
    clock["now"] = datetime.now(UTC)
    run_id = housekeeper.look(chore)
    assert run_id is not None
    # While that run is under way (here: no worker yet), more looks make no second one.
    for _ in range(3):
        clock["now"] = datetime.now(UTC)
        assert housekeeper.look(chore) is None
    (run,) = runs_of(client, chore)
    assert run.id == run_id and "housekeeping" in run.tags

    # The run, executed as a worker would, sends the retry; then there is no work and no further run.
    from prefect.flow_engine import run_flow

    from flows.deliver_webhooks import deliver_webhooks

    counts = run_flow(deliver_webhooks, flow_run=client.read_flow_run(run_id), return_type="result")
    assert counts["delivered"] == 1
    assert len(receiver.received("/retry")) == 1
    assert get_message(store, message.id).status.value == "delivered"
    sent_within = datetime.now(UTC) - (enqueued + timedelta(seconds=RETRY_SECONDS))
    assert sent_within < timedelta(seconds=30)
    clock["now"] = datetime.now(UTC)
    assert housekeeper.look(chore) is None
    assert [r.id for r in runs_of(client, chore)] == [run_id]


def test_the_thread_looks_and_stops(store: Store) -> None:
    looked: list[datetime] = []

    def has_work(_: Store, now: datetime) -> bool:
        looked.append(now)
        return False

    housekeeper = Housekeeper(store, clock=lambda: datetime.now(UTC), interval=0.05, chores=(Chore("x/y", has_work),))
    housekeeper.start()
    deadline = time.monotonic() + 10
    while len(looked) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    housekeeper.stop()
    assert len(looked) >= 3
