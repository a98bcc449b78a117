"""Delivering scheduled events: the pure policy, then real passes against a loopback receiver that verifies every
request with the reference standardwebhooks and svix libraries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bulletin.settings import Settings
from bulletin.store import Store
from bulletin.store import scheduled_events as se
from bulletin.store.scheduled_events import EventStatus, HeaderIn, RetryConf
from tasks.scheduled_events.dispatch import Result, deliver_due_events, plan_after, request_headers, timeout_of
from tasks.webhooks import AttemptResult
from tests.fixtures.webhook_receiver import Receiver, Reply, running_receiver

CREDENTIAL = "Bearer receiver-credential-0123456789"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, webhook_allowed_networks=["127.0.0.0/8"])


@dataclass
class Clock:
    """Real time plus an offset the test moves (signatures must stay within the receiver's 5-minute window)."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def event_for(store: Store, url: str, clock: Clock, **kwargs: Any) -> se.ScheduledEvent:
    values: dict[str, Any] = {
        "org": "acme",
        "webhook": url,
        "schedule_at": clock() - timedelta(seconds=1),
        "payload": {"email": "bob@example.com"},
        "headers": [HeaderIn(name="Authorization", value=CREDENTIAL)],
        "now": clock(),
    }
    return se.create_event(store, **{**values, **kwargs})


def result(outcome: str, status: int | None = 500, retry_after: float | None = None) -> AttemptResult:
    return AttemptResult(status, 5, "", None, outcome, retry_after)  # type: ignore[arg-type]


# --- pure ---------------------------------------------------------------------------------------------------------

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_plan_after(store: Store) -> None:
    event = se.create_event(
        store, org="acme", webhook="https://h.example.com/x", schedule_at=T0, payload=None, now=T0,
        retry_conf=RetryConf(num_retries=1, retry_interval_seconds=12),
    )  # fmt: skip
    assert plan_after(event, result("success", 204), T0) == (EventStatus.DELIVERED, None)
    assert plan_after(event, result("failed", None), T0) == (EventStatus.ERROR, None)  # refused before connecting
    retry = (EventStatus.SCHEDULED, T0 + timedelta(seconds=12))
    assert plan_after(event, result("retry"), T0) == retry
    assert plan_after(event, result("gone", 410), T0) == retry  # no endpoint to disable: a failure like another
    assert plan_after(event, result("retry", 503, retry_after=60), T0) == (
        EventStatus.SCHEDULED,
        T0 + timedelta(seconds=60),
    )
    spent = event.model_copy(update={"tries": 1})
    assert plan_after(spent, result("retry"), T0) == (EventStatus.ERROR, None)
    assert timeout_of(event) == 30.0  # Hasura's default 60 s, capped by our 30 s rule


def test_request_headers_are_logged_masked(store: Store) -> None:
    event = se.create_event(
        store, org="acme", webhook="https://h.example.com/x", schedule_at=T0, payload=None, now=T0,
        headers=[HeaderIn(name="Authorization", value=CREDENTIAL)],
    )  # fmt: skip
    secret = se.org_secret(store, "acme", now=T0).secret.get_secret_value()
    sent = request_headers(event, [secret], T0)
    assert sent["Authorization"] == CREDENTIAL and sent["webhook-id"] == event.id
    assert sent["webhook-timestamp"] == str(int(T0.timestamp())) and sent["webhook-signature"].startswith("v1,")
    logged = {h["name"]: h["value"] for h in se.logged_headers(sent)}
    assert logged["Authorization"] == se.MASK and logged["webhook-signature"] == se.MASK
    assert logged["webhook-id"] == event.id and logged["content-type"] == "application/json"


# --- real passes --------------------------------------------------------------------------------------------------


def test_a_failed_attempt_is_retried_and_delivered_with_the_same_id_and_fresh_signatures(
    store: Store, settings: Settings, receiver: Receiver
) -> None:
    clock = Clock()
    secret = se.org_secret(store, "acme", now=clock()).secret.get_secret_value()
    receiver.verify_with("/hook", secret)
    receiver.script("/hook", Reply(500, body=b"not yet"))
    event = event_for(
        store, receiver.url("/hook"), clock, retry_conf=RetryConf(num_retries=2, retry_interval_seconds=5)
    )

    first = deliver_due_events(store, settings, now=clock)
    assert first.results == {event.id: Result.RETRYING}
    retry_at = first.follow_ups[event.id]
    assert deliver_due_events(store, settings, now=clock).results == {}  # not due again before retry_at

    clock.offset = timedelta(seconds=6)
    second = deliver_due_events(store, settings, now=clock)
    assert second.results == {event.id: Result.DELIVERED} and second.follow_ups == {}

    got = receiver.received("/hook")
    assert [r.verified_by for r in got] == [(0,), (0,)]
    assert {r.headers["webhook-id"] for r in got} == {event.id}
    assert got[0].headers["webhook-timestamp"] != got[1].headers["webhook-timestamp"]
    assert got[0].headers["authorization"] == CREDENTIAL
    assert json.loads(got[0].body) == {
        "id": event.id,
        "scheduled_time": event.schedule_at.isoformat().replace("+00:00", "Z"),
        "payload": {"email": "bob@example.com"},
        "comment": None,
    }
    done = se.get_event(store, event.id)
    assert done.status is EventStatus.DELIVERED and done.tries == 2
    logs = se.invocations(store, event.id)
    assert [(i.attempt, i.status_code, i.response_body) for i in logs] == [(1, 500, "not yet"), (2, 200, "ok")]
    assert logs[0].attempted_at < retry_at <= logs[1].attempted_at
    for invocation in logs:
        text = json.dumps(invocation.request_headers)
        assert CREDENTIAL not in text and secret not in text and "v1," not in text


def test_retries_spent_end_in_error(store: Store, settings: Settings, receiver: Receiver) -> None:
    clock = Clock()
    receiver.script("/hook", Reply(500), Reply(502))
    event = event_for(
        store, receiver.url("/hook"), clock, retry_conf=RetryConf(num_retries=1, retry_interval_seconds=1)
    )
    assert deliver_due_events(store, settings, now=clock).results == {event.id: Result.RETRYING}
    clock.offset = timedelta(seconds=2)
    final = deliver_due_events(store, settings, now=clock)
    assert final.results == {event.id: Result.ERROR} and final.follow_ups == {}
    assert se.get_event(store, event.id).status is EventStatus.ERROR
    assert len(receiver.received("/hook")) == 2


def test_a_target_the_ssrf_guard_refuses_is_an_error_at_once(store: Store, tmp_path: Path, receiver: Receiver) -> None:
    clock = Clock()
    strict = Settings(home=tmp_path)  # loopback not allowed
    event = event_for(store, receiver.url("/hook"), clock, retry_conf=RetryConf(num_retries=5))
    assert deliver_due_events(store, strict, now=clock).results == {event.id: Result.ERROR}
    (log,) = se.invocations(store, event.id)
    assert log.status_code is None and "loopback" in (log.error or "")
    assert receiver.received() == []


def test_an_event_past_its_tolerance_is_dead_and_nothing_is_sent(
    store: Store, settings: Settings, receiver: Receiver
) -> None:
    clock = Clock()
    event = event_for(
        store, receiver.url("/hook"), clock,
        schedule_at=clock() - timedelta(seconds=120), retry_conf=RetryConf(tolerance_seconds=60),
    )  # fmt: skip
    assert deliver_due_events(store, settings, now=clock).results == {event.id: Result.DEAD}
    assert se.get_event(store, event.id).status is EventStatus.DEAD
    assert receiver.received() == [] and se.invocations(store, event.id) == []


def test_two_dispatchers_at_once_send_an_event_once(store: Store, settings: Settings, receiver: Receiver) -> None:
    clock = Clock()
    receiver.script("/slow", Reply(200, hang=0.5))
    event = event_for(store, receiver.url("/slow"), clock)
    with ThreadPoolExecutor(max_workers=2) as pool:
        passes = list(pool.map(lambda _: deliver_due_events(store, settings, now=clock), range(2)))
    results = [r for p in passes for r in p.results.values()]
    # One pass sends it. The other either finds it claimed (BUSY) or, when it looks after the claim, not due at all:
    # which one depends on timing; that it is sent once does not.
    assert results.count(Result.DELIVERED) == 1 and set(results) <= {Result.DELIVERED, Result.BUSY}
    assert len(receiver.received("/slow")) == 1 and se.get_event(store, event.id).status is EventStatus.DELIVERED


def test_named_events_come_first_and_others_due_are_swept(store: Store, settings: Settings, receiver: Receiver) -> None:
    clock = Clock()
    missed, named = (event_for(store, receiver.url(f"/{n}"), clock) for n in ("missed", "named"))
    summary = deliver_due_events(store, settings, now=clock, event_ids=[named.id])
    assert summary.results == {named.id: Result.DELIVERED, missed.id: Result.DELIVERED}
    assert next(iter(summary.results)) == named.id
