"""Scheduled events in the state store: creation, claims (with real threads), dead events, invocation logs, cancel,
keyset pagination, the organisation's signing secret. On a real SQLite file and (when configured) PostgreSQL."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from bulletin.errors import ConfigError, NotFoundError, RequestError, StorageError
from bulletin.store import Store, migrate, open_store
from bulletin.store import scheduled_events as se
from bulletin.store.base import metadata
from bulletin.store.db import VERSION_TABLE
from bulletin.store.scheduled_event_schema import PAYLOAD_MAX_BYTES
from bulletin.store.scheduled_events import EventClaim, EventStatus, HeaderIn, RetryConf

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
URL = "https://hooks.example.com/remind"
CREDENTIAL = "Bearer receiver-credential-0123456789"
MY_TABLES = {"scheduled_events", "scheduled_event_invocations", "scheduled_event_secrets"}


def create(store: Store, org: str = "acme", at: datetime = T0, **kwargs: Any) -> se.ScheduledEvent:
    values: dict[str, Any] = {"webhook": URL, "schedule_at": at, "payload": {"email": "bob@example.com"}, "now": T0}
    return se.create_event(store, org=org, **{**values, **kwargs})


def take(store: Store, event_id: str, now: datetime = T0, lease: float = 60) -> EventClaim:
    claim = se.claim_event(store, event_id, lease_seconds=lease, now=now)
    assert claim is not None
    return claim


def record(store: Store, claim: EventClaim, status: EventStatus, **kwargs: Any) -> tuple[Any, Any, bool]:
    values: dict[str, Any] = {
        "attempted_at": T0,
        "request_headers": se.logged_headers({"webhook-id": claim.event.id, "Authorization": CREDENTIAL}),
        "status_code": 500 if status is not EventStatus.DELIVERED else 200,
        "response_body": "boom",
        "duration_ms": 12,
        "error": None,
        "status": status,
        "next_retry_at": T0 + timedelta(seconds=10) if status is EventStatus.SCHEDULED else None,
        "now": T0,
    }
    return se.record_invocation(store, claim, **{**values, **kwargs})


def test_migration_0004_matches_the_tables(store: Store) -> None:
    def mine(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
        table = name if kind == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table in MY_TABLES

    opts = {"compare_type": True, "version_table": VERSION_TABLE, "include_object": mine}
    with store.read() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts=opts), metadata) == []
        assert set(inspect(conn).get_table_names()) >= MY_TABLES


def test_create_keeps_hasura_defaults_the_exact_body_and_hides_header_values(store: Store) -> None:
    event = create(store, headers=[HeaderIn(name="Authorization", value=CREDENTIAL)], comment="reminder")
    assert event.id.startswith("se_") and event.status is EventStatus.SCHEDULED and event.tries == 0
    assert event.retry_conf == RetryConf(
        num_retries=0, retry_interval_seconds=10, timeout_seconds=60, tolerance_seconds=21_600
    )
    assert json.loads(event.body) == {
        "id": event.id,
        "scheduled_time": "2026-12-01T09:00:00Z",
        "payload": {"email": "bob@example.com"},
        "comment": "reminder",
    }
    assert event.payload == {"email": "bob@example.com"} and event.due_at == T0
    assert event.headers[0].value.get_secret_value() == CREDENTIAL
    assert CREDENTIAL not in repr(event) and CREDENTIAL not in event.model_dump_json()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"comment": "x" * 1001}, "comment"),
        ({"payload": {"blob": "x" * PAYLOAD_MAX_BYTES}}, "payload"),
        ({"payload": float("nan")}, "payload"),
        ({"headers": [HeaderIn(name="X-A", value="1"), HeaderIn(name="x-a", value="2")]}, "headers.1.name"),
        ({"headers": [HeaderIn(name=f"X-{i}", value="v") for i in range(21)]}, "headers"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_stores_nothing(
    store: Store, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(RequestError) as caught:
        create(store, **change)
    assert caught.value.field == field
    assert se.list_events(store, org="acme") == []


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ({"name": "X-Bad\r\nInjected", "value": "v"}, "header name"),
        ({"name": "X-Ok", "value": "a\r\nInjected: yes"}, "header value"),
        ({"name": "webhook-signature", "value": "v1,forged"}, "set by Bulletin"),
        ({"name": "Host", "value": "elsewhere"}, "set by Bulletin"),
    ],
)
def test_header_names_and_values_are_checked(header: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        HeaderIn.model_validate(header)


def test_timestamps_must_be_aware(store: Store) -> None:
    with pytest.raises(ConfigError):
        create(store, at=datetime(2026, 12, 1, 9, 0))


def test_a_due_event_is_claimed_once_and_a_lapsed_lease_is_taken_over(store: Store) -> None:
    event = create(store)
    assert se.claim_event(store, event.id, lease_seconds=60, now=T0 - timedelta(seconds=1)) is None  # not due
    assert [e.id for e in se.due_events(store, now=T0, limit=10)] == [event.id]
    first = take(store, event.id)
    assert se.claim_event(store, event.id, lease_seconds=60, now=T0) is None
    assert se.due_events(store, now=T0, limit=10) == []
    later = T0 + timedelta(seconds=61)
    second = take(store, event.id, now=later)
    assert second.token != first.token
    # The first dispatcher's late record is logged but moves nothing: the second claim decides.
    _, after, applied = record(store, first, EventStatus.DELIVERED)
    assert not applied and after.status is EventStatus.SCHEDULED
    _, after, applied = record(store, second, EventStatus.DELIVERED, now=later)
    assert applied and after.status is EventStatus.DELIVERED and after.tries == 1 and after.processed_at == later
    assert [i.attempt for i in se.invocations(store, event.id)] == [1, 1]


def test_concurrent_claims_give_the_event_to_exactly_one(store_url: str) -> None:
    with open_store(store_url) as setup:
        migrate(setup)
        event = create(setup)
    stores = [open_store(store_url) for _ in range(8)]
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            claims = list(
                pool.map(lambda s: se.claim_event(s, event.id, lease_seconds=60, now=T0 + timedelta(seconds=1)), stores)
            )
    finally:
        for opened in stores:
            opened.close()
    assert sum(c is not None for c in claims) == 1


def test_an_event_past_its_tolerance_is_dead_not_claimed(store: Store) -> None:
    event = create(store, retry_conf=RetryConf(tolerance_seconds=60))
    late = T0 + timedelta(seconds=61)
    claim = take(store, event.id, now=late)
    assert claim.dead and claim.event.status is EventStatus.DEAD and claim.event.processed_at == late
    assert "tolerance_seconds (60 s): 61 s late" in (claim.event.last_error or "")
    assert se.claim_event(store, event.id, lease_seconds=60, now=late) is None
    assert se.invocations(store, event.id) == []


def test_a_retry_is_not_dead_however_late(store: Store) -> None:
    event = create(store, retry_conf=RetryConf(num_retries=1, tolerance_seconds=60))
    record(store, take(store, event.id), EventStatus.SCHEDULED, next_retry_at=T0 + timedelta(seconds=10))
    retry = take(store, event.id, now=T0 + timedelta(hours=2))
    assert not retry.dead and retry.event.tries == 1


def test_a_failed_attempt_schedules_the_retry_and_logs_masked_headers(store: Store) -> None:
    event = create(store, retry_conf=RetryConf(num_retries=2))
    retry_at = T0 + timedelta(seconds=10)
    invocation, after, applied = record(store, take(store, event.id), EventStatus.SCHEDULED, next_retry_at=retry_at)
    assert applied and after.status is EventStatus.SCHEDULED and after.tries == 1
    assert after.next_retry_at == retry_at and after.due_at == retry_at and after.claimed_by is None
    assert invocation.request_headers == [
        {"name": "webhook-id", "value": event.id},
        {"name": "Authorization", "value": se.MASK},
    ]
    assert invocation.status_code == 500 and invocation.response_body == "boom" and invocation.attempt == 1
    assert se.due_events(store, now=T0 + timedelta(seconds=9), limit=5) == []
    assert [e.id for e in se.due_events(store, now=retry_at, limit=5)] == [event.id]


def test_unmasked_headers_never_reach_the_log(store: Store) -> None:
    claim = take(store, create(store).id)
    with pytest.raises(ConfigError, match="masked"):
        record(store, claim, EventStatus.ERROR, request_headers=[{"name": "Authorization", "value": CREDENTIAL}])
    assert se.invocations(store, claim.event.id) == []


def test_the_response_body_is_cut_at_4_kb(store: Store) -> None:
    invocation, _, _ = record(store, take(store, create(store).id), EventStatus.ERROR, response_body="é" * 5000)
    assert invocation.response_body is not None and len(invocation.response_body.encode()) <= 4096


def test_cancel_wins_only_over_an_unheld_pending_event(store: Store) -> None:
    pending, delivered, held = create(store), create(store), create(store)
    cancelled = se.cancel_event(store, pending.id, org="acme", now=T0)
    assert cancelled.status is EventStatus.CANCELLED and cancelled.processed_at == T0
    assert se.cancel_event(store, pending.id, org="acme", now=T0).status is EventStatus.CANCELLED  # idempotent
    assert se.claim_event(store, pending.id, lease_seconds=60, now=T0) is None
    record(store, take(store, delivered.id), EventStatus.DELIVERED)
    with pytest.raises(StorageError, match="already delivered"):
        se.cancel_event(store, delivered.id, org="acme", now=T0)
    take(store, held.id)
    with pytest.raises(StorageError, match="being delivered"):
        se.cancel_event(store, held.id, org="acme", now=T0)
    with pytest.raises(NotFoundError):
        se.cancel_event(store, held.id, org="globex", now=T0)


def test_another_organisations_event_is_not_found(store: Store) -> None:
    event = create(store, org="acme")
    assert se.get_event(store, event.id, org="acme").id == event.id
    with pytest.raises(NotFoundError) as other:
        se.get_event(store, event.id, org="globex")
    with pytest.raises(NotFoundError) as missing:
        se.get_event(store, "se_missing", org="globex")
    assert str(other.value).replace(event.id, "X") == str(missing.value).replace("se_missing", "X")


def test_keyset_pages_neither_repeat_nor_skip(store: Store) -> None:
    # Three share one created_at: the id breaks the tie.
    made = [create(store, now=T0 + timedelta(seconds=s)) for s in (0, 1, 1, 1, 2)]
    create(store, org="globex")
    pages, after = [], None
    while True:
        page = se.list_events(store, org="acme", limit=2, after=after)
        if not page:
            break
        pages.append([e.id for e in page])
        after = se.cursor_of(page[-1])
        create(store, now=T0 + timedelta(seconds=3))  # a newer event never shows up on later pages
    seen = [event_id for page in pages for event_id in page]
    assert sorted(seen) == sorted(e.id for e in made) and len(set(seen)) == len(seen) == 5
    assert seen[-1] == made[0].id


def test_list_filters_by_status(store: Store) -> None:
    pending, done = create(store), create(store)
    record(store, take(store, done.id), EventStatus.DELIVERED)
    assert [e.id for e in se.list_events(store, org="acme", statuses=[EventStatus.SCHEDULED])] == [pending.id]
    assert [e.id for e in se.list_events(store, org="acme", statuses=se.PROCESSED)] == [done.id]


def test_the_org_secret_is_made_once_and_rotates_with_an_overlap(store: Store) -> None:
    first = se.org_secret(store, "acme", now=T0)
    assert first.secret.get_secret_value().startswith("whsec_")
    assert se.org_secret(store, "acme", now=T0) == first
    assert se.org_secret(store, "globex", now=T0).secret != first.secret
    rotated = se.rotate_org_secret(store, "acme", grace_seconds=3600, now=T0)
    assert rotated.previous_secret == first.secret and rotated.secret != first.secret
    old, new = first.secret.get_secret_value(), rotated.secret.get_secret_value()
    assert rotated.signing_secrets(T0 + timedelta(minutes=59)) == [new, old]
    assert rotated.signing_secrets(T0 + timedelta(minutes=61)) == [new]
    assert old not in repr(rotated) and old not in rotated.model_dump_json()
