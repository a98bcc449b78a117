"""End to end on uvicorn with the session's real Prefect API: an event scheduled 3 s ahead goes to a loopback
receiver that fails once, and is delivered by the retry's flow run, signed with the organisation's secret (verified
by the reference standardwebhooks and svix libraries); an event whose tolerance has passed ends dead, unsent.

The flow runs read their settings from the environment, as in production, so the test sets the state store and
the loopback allowance there for both the API and its runs."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.sorting import FlowRunSort

from bulletin.edge.api import create_app
from bulletin.settings import Settings
from bulletin.store import migrate, open_store
from bulletin.store import scheduled_events as se
from bulletin.store.api_keys import create_key
from tests.api.conftest import AppClient
from tests.api.v1_support import serving
from tests.fixtures.webhook_receiver import Receiver, Reply, running_receiver

CREDENTIAL = "Bearer receiver-credential-0123456789"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


@pytest.fixture
def env(prefect_api: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULLETIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BULLETIN_DATABASE_URL", f"sqlite:///{tmp_path / 'state' / 'bulletin.db'}")
    monkeypatch.setenv("BULLETIN_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
    (tmp_path / "triggers").mkdir()
    monkeypatch.setenv("BULLETIN_TRIGGERS_DIR", str(tmp_path / "triggers"))


@pytest.fixture
def api_url(env: None) -> Iterator[str]:
    with serving(Settings(), "events-e2e") as url:
        yield url


def admin_key() -> str:
    with open_store(Settings().database) as store:
        migrate(store)
        _, key = create_key(store, org="acme", role="admin", now=datetime.now(UTC))
    return key


def wait_for(http: httpx.Client, event_id: str, status: str, seconds: float = 90) -> dict[str, Any]:
    """Poll until the event reaches ``status`` (a wait, not a timing assertion: the limit only stops a hang)."""
    deadline = time.monotonic() + seconds
    while True:
        event: dict[str, Any] = http.get(f"/v1/scheduled-events/{event_id}").json()
        if event["status"] == status or time.monotonic() > deadline:
            return event
        time.sleep(0.2)


def event_runs(event_id: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"scheduled-event:{event_id}"])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        )


def test_an_event_fails_once_and_is_delivered_by_its_retry_and_a_late_one_is_dead(
    api_url: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    key = admin_key()
    with httpx.Client(base_url=api_url, headers={"authorization": f"Bearer {key}"}, timeout=30) as http:
        secret = http.get("/v1/scheduled-events/signing-secret").json()["secret"]
        receiver.verify_with("/hook", secret)
        receiver.script("/hook", Reply(500, body=b"not yet"))
        schedule_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
        created = http.post(
            "/v1/scheduled-events",
            json={
                "webhook": receiver.url("/hook"),
                "schedule_at": schedule_at.isoformat().replace("+00:00", "Z"),
                "payload": {"email": "bob@example.com"},
                "headers": [{"name": "Authorization", "value": CREDENTIAL}],
                "retry_conf": {"num_retries": 2, "retry_interval_seconds": 1},
                "comment": "reminder",
            },
        )
        assert created.status_code == 201, created.text
        event_id = created.json()["event_id"]
        late = http.post(
            "/v1/scheduled-events",
            json={
                "webhook": receiver.url("/late"),
                "schedule_at": (datetime.now(UTC) - timedelta(seconds=120)).isoformat(),
                "payload": {"too": "late"},
                "retry_conf": {"tolerance_seconds": 60},
            },
        )
        assert late.status_code == 201, late.text
        late_id = late.json()["event_id"]

        delivered = wait_for(http, event_id, "delivered")
        dead = wait_for(http, late_id, "dead")

    assert delivered["status"] == "delivered" and delivered["tries"] == 2, delivered
    first, second = delivered["invocations"]
    assert (first["attempt"], first["status_code"], first["response_body"]) == (1, 500, "not yet")
    assert (second["attempt"], second["status_code"], second["response_body"]) == (2, 200, "ok")
    assert datetime.fromisoformat(first["attempted_at"]) >= schedule_at
    for invocation in (first, second):
        headers = {h["name"]: h["value"] for h in invocation["request_headers"]}
        assert (
            headers["webhook-id"] == event_id and headers["Authorization"] == headers["webhook-signature"] == "********"
        )
    assert CREDENTIAL not in json.dumps(delivered)

    got = receiver.received("/hook")
    assert len(got) == 2 and [r.verified_by for r in got] == [(0,), (0,)]
    assert {r.headers["webhook-id"] for r in got} == {event_id}
    assert all(r.headers["authorization"] == CREDENTIAL for r in got)
    assert json.loads(got[1].body) == {
        "id": event_id,
        "scheduled_time": schedule_at.isoformat().replace("+00:00", "Z"),
        "payload": {"email": "bob@example.com"},
        "comment": "reminder",
    }

    assert dead["status"] == "dead" and dead["invocations"] == [] and "tolerance" in dead["last_error"]
    assert receiver.received("/late") == []

    # A flow run scheduled for the event's time, then one for its retry; both ran to completion. The event is
    # recorded delivered a moment before its run reports Completed: under load, wait for that moment.
    deadline = time.monotonic() + 60
    runs = event_runs(event_id)
    while not all(r.state.is_final() for r in runs) and time.monotonic() < deadline:
        time.sleep(0.5)
        runs = event_runs(event_id)
    assert len(runs) == 2 and all(r.state.is_completed() for r in runs), [r.state for r in runs]
    assert runs[0].expected_start_time == schedule_at
    assert delivered["flow_run_id"] == str(runs[1].id)

    logged = caplog.text
    assert CREDENTIAL not in logged and secret not in logged and key not in logged


def test_a_due_event_whose_run_was_missed_is_swept_when_the_api_starts(env: None, receiver: Receiver) -> None:
    with open_store(Settings().database) as store:
        migrate(store)
        # Stored while no API ran: no flow run was ever made for it.
        now = datetime.now(UTC)
        event = se.create_event(
            store, org="acme", webhook=receiver.url("/missed"), schedule_at=now - timedelta(seconds=5), payload=1,
            now=now,
        )  # fmt: skip
        client = AppClient(create_app(Settings()))
        try:
            deadline = time.monotonic() + 90
            while se.get_event(store, event.id).status is se.EventStatus.SCHEDULED and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            client.close()
        assert se.get_event(store, event.id).status is se.EventStatus.DELIVERED
    assert len(receiver.received("/missed")) == 1
