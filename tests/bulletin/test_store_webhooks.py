"""The webhook tables of the state store: endpoints, messages, claims, attempts and inbound receipts, on a real
SQLite file and (when configured) a real PostgreSQL. Concurrency is tested with real threads."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from bulletin.errors import ConfigError, NotFoundError, StorageError
from bulletin.store import Store, open_store
from bulletin.store import webhooks as wh
from bulletin.store.base import metadata
from bulletin.store.db import VERSION_TABLE, alembic_config
from bulletin.store.inbound import forget_inbound
from bulletin.store.webhooks import MessageClaim, MessageStatus

T0 = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
URL = "https://hooks.example.com/bulletin"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes


def add(store: Store, events: list[str] | None = None, **kwargs: Any) -> wh.Endpoint:
    endpoint, _ = wh.add_endpoint(store, url=kwargs.pop("url", URL), event_types=events or ["*"], now=T0, **kwargs)
    return endpoint


def take(store: Store, message_id: str, now: datetime = T0, lease: float = 60) -> MessageClaim:
    claim = wh.claim_message(store, message_id, lease_seconds=lease, now=now)
    assert claim is not None
    return claim


def record(store: Store, claim: MessageClaim, outcome: str = "retry", **kwargs: Any) -> wh.RecordedAttempt:
    status = kwargs.pop("message_status", MessageStatus.PENDING if outcome == "retry" else MessageStatus.FAILED)
    values: dict[str, Any] = {
        "attempted_at": T0,
        "status_code": 500,
        "duration_ms": 12,
        "response_body": "boom",
        "error": None,
        "outcome": outcome,
        "message_status": status,
        "next_attempt_at": T0 + timedelta(seconds=5) if status is MessageStatus.PENDING else None,
        "now": T0,
    }
    return wh.record_attempt(store, claim, **{**values, **kwargs})


# --- schema -------------------------------------------------------------------------------------------------------


def test_migrations_match_the_tables(store: Store) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with store.read() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one() == head
        context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
        tables = set(inspect(conn).get_table_names())
    assert {"webhook_endpoints", "webhook_messages", "webhook_attempts", "inbound_receipts"} <= tables


# --- endpoints ----------------------------------------------------------------------------------------------------


def test_add_generates_a_secret_shown_once_and_never_in_repr_or_json(store: Store) -> None:
    endpoint, secret = wh.add_endpoint(store, url=URL, event_types=["report.delivered"], now=T0, description="ops")
    assert endpoint.id.startswith("ep_") and secret.startswith("whsec_")
    assert wh.check_secret(secret) == secret
    assert secret not in repr(endpoint) and secret not in str(endpoint) and secret not in endpoint.model_dump_json()
    (listed,) = wh.list_endpoints(store)
    assert listed.enabled and listed.style == "standard" and listed.event_types == ("report.delivered",)
    assert wh.signing_secrets(listed, T0) == [secret]


def test_add_keeps_a_given_secret_and_style(store: Store) -> None:
    endpoint, secret = wh.add_endpoint(store, url=URL, event_types=["*"], secret=SECRET, style="dbt", now=T0)
    assert secret == SECRET and endpoint.style == "dbt"
    assert wh.signing_secrets(wh.get_endpoint(store, endpoint.id), T0) == [SECRET]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"url": "ftp://example.com/x"}, "http"),
        ({"url": "https:///nohost"}, "host"),
        ({"url": "https://user:pw@example.com/"}, "credentials"),
        ({"url": "https://example.com/a b"}, "spaces"),
        ({"url": "https://example.com:99999/"}, "invalid"),
        ({"event_types": []}, "at least one"),
        ({"event_types": ["report.exploded"]}, "unknown event type"),
        ({"event_types": ["ping"]}, "unknown event type"),
        ({"secret": "sk_Q7x9Zt2w"}, "whsec_"),
        ({"secret": "whsec_!!!!"}, "base64"),
        ({"secret": "whsec_c2hvcnQ="}, "24-64 bytes"),
        ({"style": "github"}, "style"),
    ],
)
def test_add_refuses_bad_input_and_stores_nothing(store: Store, kwargs: dict[str, Any], match: str) -> None:
    values: dict[str, Any] = {"url": URL, "event_types": ["*"], **kwargs}
    with pytest.raises(ConfigError, match=match) as caught:
        wh.add_endpoint(store, now=T0, **values)
    if "secret" in kwargs:
        assert kwargs["secret"] not in str(caught.value)
    assert wh.list_endpoints(store) == []


def test_add_accepts_an_unpadded_svix_secret(store: Store) -> None:
    unpadded = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYqr"[:43]
    endpoint, _ = wh.add_endpoint(store, url=URL, event_types=["*"], secret=unpadded, now=T0)
    assert wh.signing_secrets(endpoint, T0) == [unpadded]


def test_unknown_endpoint_is_not_found(store: Store) -> None:
    for call in (
        lambda: wh.get_endpoint(store, "ep_nope"),
        lambda: wh.remove_endpoint(store, "ep_nope"),
        lambda: wh.rotate_secret(store, "ep_nope", grace_seconds=1, now=T0),
        lambda: wh.disable_endpoint(store, "ep_nope", reason="x", now=T0),
        lambda: wh.enqueue(store, event_type="ping", payload={}, now=T0, endpoint_ids=["ep_nope"]),
    ):
        with pytest.raises(NotFoundError):
            call()


def test_rotation_signs_with_both_secrets_during_the_grace_only(store: Store) -> None:
    endpoint, old = wh.add_endpoint(store, url=URL, event_types=["*"], now=T0)
    rotated, new = wh.rotate_secret(store, endpoint.id, grace_seconds=3600, now=T0)
    assert new != old and old not in repr(rotated)
    assert wh.signing_secrets(rotated, T0 + timedelta(minutes=59)) == [new, old]
    assert wh.signing_secrets(rotated, T0 + timedelta(hours=1)) == [new]
    again, newest = wh.rotate_secret(store, endpoint.id, grace_seconds=0, now=T0)
    assert wh.signing_secrets(again, T0) == [newest] and again.previous_secret is None


def test_remove_deletes_messages_and_attempts(store: Store) -> None:
    endpoint = add(store)
    (message,) = wh.enqueue(store, event_type="run.completed", payload={"n": 1}, now=T0)
    record(store, take(store, message.id))
    wh.remove_endpoint(store, endpoint.id)
    assert wh.list_endpoints(store) == [] and wh.message_attempts(store) == []
    with pytest.raises(NotFoundError):
        wh.get_message(store, message.id)


def test_an_attempt_finishing_after_its_endpoint_was_removed_records_nothing(store: Store) -> None:
    # `bulletin webhooks remove` (or the demo's cleanup) while a request is in flight: no foreign-key error.
    endpoint = add(store)
    (message,) = wh.enqueue(store, event_type="run.completed", payload={"n": 1}, now=T0)
    claim = take(store, message.id)
    wh.remove_endpoint(store, endpoint.id)
    with pytest.raises(NotFoundError, match="removed with its endpoint"):
        record(store, claim, outcome="success", status_code=200, message_status=MessageStatus.DELIVERED)
    assert wh.message_attempts(store) == []


# --- messages -----------------------------------------------------------------------------------------------------


def test_enqueue_goes_to_enabled_subscribers_with_one_canonical_body(store: Store) -> None:
    delivered = add(store, ["report.delivered"])
    everything = add(store, ["*"])
    add(store, ["run.completed"])
    off = add(store, ["*"])
    wh.disable_endpoint(store, off.id, reason="test", now=T0)
    messages = wh.enqueue(store, event_type="report.delivered", payload={"b": 1, "a": "é"}, now=T0)
    assert {m.endpoint_id for m in messages} == {delivered.id, everything.id}
    assert len({m.id for m in messages}) == 2 and all(m.id.startswith("msg_") for m in messages)
    assert {m.payload for m in messages} == {
        '{"data":{"a":"\\u00e9","b":1},"timestamp":"2026-11-02T07:00:00.000Z","type":"report.delivered"}'
    }
    assert json.loads(messages[0].body)["data"] == {"a": "é", "b": 1}
    assert all(m.status is MessageStatus.PENDING and m.attempts == 0 and m.next_attempt_at == T0 for m in messages)


def test_enqueue_events_queues_a_runs_events_at_once_for_their_subscribers_only(store: Store) -> None:
    delivered = add(store, ["report.delivered"])
    acme = add(store, ["*"], org="acme")
    events = [
        ("report.delivered", {"recipient": "a"}, "acme"),
        ("report.delivered", {"recipient": "b"}, "globex"),
        ("report.delivered", {"x": "a" * 300_000}, "acme"),  # too large: left out, the others still queued
        ("run.completed", {"counts": {}}, None),
    ]
    ids = wh.enqueue_events(store, events, now=T0, delay_seconds=5)
    messages = [wh.get_message(store, i) for i in ids]
    heard = sorted((m.endpoint_id, json.loads(m.body)["data"].get("recipient")) for m in messages)
    assert heard == sorted([(delivered.id, "a"), (delivered.id, "b"), (acme.id, "a")])
    assert all(m.next_attempt_at == T0 + timedelta(seconds=5) for m in messages)
    assert wh.enqueue_events(store, [], now=T0) == []
    assert [e.id for e in wh.enabled_endpoints(store)] == [delivered.id, acme.id]


def test_enqueue_to_named_endpoints_ignores_subscriptions(store: Store) -> None:
    only_reports = add(store, ["report.failed"])
    (ping,) = wh.enqueue(store, event_type="ping", payload={}, now=T0, endpoint_ids=[only_reports.id])
    assert ping.endpoint_id == only_reports.id


def test_enqueue_refuses_a_payload_that_is_not_small_json(store: Store) -> None:
    add(store)
    with pytest.raises(ConfigError, match="links, not data"):
        wh.enqueue(store, event_type="run.completed", payload={"x": "a" * 300_000}, now=T0)
    with pytest.raises(ConfigError, match="not JSON"):
        wh.enqueue(store, event_type="run.completed", payload={"x": object()}, now=T0)
    assert wh.list_messages(store) == []


def test_claim_is_exclusive_until_its_lease_lapses(store: Store) -> None:
    add(store)
    (message,) = wh.enqueue(store, event_type="run.completed", payload={}, now=T0, delay_seconds=10)
    assert wh.due_messages(store, now=T0, limit=10) == []
    assert wh.claim_message(store, message.id, lease_seconds=60, now=T0) is None  # not due yet
    later = T0 + timedelta(seconds=10)
    assert [m.id for m in wh.due_messages(store, now=later, limit=10)] == [message.id]
    first = take(store, message.id, now=later)
    assert first.attempt_number == 0 and first.message.status is MessageStatus.DELIVERING
    assert wh.claim_message(store, message.id, lease_seconds=60, now=later) is None
    assert wh.due_messages(store, now=later + timedelta(seconds=59), limit=10) == []
    # The first claimer "crashed": once its lease is over, another takes the message over...
    second = take(store, message.id, now=later + timedelta(seconds=61))
    assert second.token != first.token
    # ...and the late first claimer's attempt is logged but moves nothing.
    late = record(store, first, outcome="success", message_status=MessageStatus.DELIVERED, status_code=200)
    assert not late.applied and late.message.status is MessageStatus.DELIVERING
    done = record(store, second, outcome="success", message_status=MessageStatus.DELIVERED, status_code=200)
    assert done.applied and done.message.status is MessageStatus.DELIVERED and done.message.attempts == 1
    assert len(wh.message_attempts(store, message_id=message.id)) == 2


def test_concurrent_claims_grant_one(store: Store) -> None:
    add(store)
    (message,) = wh.enqueue(store, event_type="run.completed", payload={}, now=T0)
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda _: wh.claim_message(store, message.id, lease_seconds=60, now=T0), range(16)))
    assert sum(c is not None for c in claims) == 1


def test_record_attempt_tracks_the_endpoint_failing_streak(store: Store) -> None:
    endpoint = add(store)
    (message,) = wh.enqueue(store, event_type="run.completed", payload={}, now=T0)
    first = record(store, take(store, message.id), attempted_at=T0)
    assert first.endpoint.failing_since == T0 and first.message.status is MessageStatus.PENDING
    assert first.message.next_attempt_at == T0 + timedelta(seconds=5) and first.message.last_status == 500
    second = record(
        store, take(store, message.id, now=T0 + timedelta(seconds=5)), attempted_at=T0 + timedelta(seconds=5)
    )
    assert second.endpoint.failing_since == T0  # still the start of the streak
    success = record(
        store,
        take(store, message.id, now=T0 + timedelta(seconds=10)),
        outcome="success",
        status_code=204,
        message_status=MessageStatus.DELIVERED,
        attempted_at=T0 + timedelta(seconds=10),
    )
    assert success.endpoint.failing_since is None and wh.get_endpoint(store, endpoint.id).failing_since is None
    assert success.message.delivered_at == T0 + timedelta(seconds=10) and success.message.attempts == 3
    attempts = wh.message_attempts(store, message_id=message.id)
    assert [a.outcome for a in attempts] == ["success", "retry", "retry"]  # newest first
    assert wh.message_attempts(store, endpoint_id=endpoint.id, limit=1)[0].status_code == 204


def test_record_attempt_keeps_4_kb_of_the_response(store: Store) -> None:
    add(store)
    (message,) = wh.enqueue(store, event_type="run.completed", payload={}, now=T0)
    recorded = record(store, take(store, message.id), response_body="é" * 5000)
    assert recorded.attempt.response_body is not None
    assert len(recorded.attempt.response_body.encode()) <= 4096
    assert recorded.attempt.response_body == "é" * 2048


def test_record_attempt_refuses_an_impossible_state(store: Store) -> None:
    add(store)
    (message,) = wh.enqueue(store, event_type="run.completed", payload={}, now=T0)
    claim = take(store, message.id)
    with pytest.raises(ConfigError):
        record(store, claim, message_status=MessageStatus.DELIVERING)
    with pytest.raises(ConfigError):
        record(store, claim, message_status=MessageStatus.PENDING, next_attempt_at=None)


def test_redeliver_requeues_a_finished_message_with_its_history(store: Store) -> None:
    add(store)
    (message,) = wh.enqueue(store, event_type="run.completed", payload={}, now=T0)
    with pytest.raises(StorageError, match="pending"):
        wh.redeliver(store, message.id, now=T0)
    record(store, take(store, message.id), outcome="failed")
    assert wh.get_message(store, message.id).status is MessageStatus.FAILED
    again = wh.redeliver(store, message.id, now=T0 + timedelta(hours=1))
    assert again.status is MessageStatus.PENDING and again.attempts == 0
    assert again.next_attempt_at == T0 + timedelta(hours=1) and again.id == message.id
    assert len(wh.message_attempts(store, message_id=message.id)) == 1
    with pytest.raises(NotFoundError):
        wh.redeliver(store, "msg_nope", now=T0)


def test_disable_fails_pending_messages_and_enable_restores(store: Store) -> None:
    endpoint = add(store)
    (message,) = wh.enqueue(store, event_type="run.completed", payload={}, now=T0)
    assert wh.disable_endpoint(store, endpoint.id, reason="410 Gone", now=T0) is True
    assert wh.disable_endpoint(store, endpoint.id, reason="again", now=T0) is False
    disabled = wh.get_endpoint(store, endpoint.id)
    assert not disabled.enabled and disabled.disabled_reason == "410 Gone"
    failed = wh.get_message(store, message.id)
    assert failed.status is MessageStatus.FAILED and failed.last_error == "endpoint disabled: 410 Gone"
    with pytest.raises(ConfigError, match="disabled"):
        wh.redeliver(store, message.id, now=T0)
    assert wh.enqueue(store, event_type="run.completed", payload={}, now=T0) == []
    enabled = wh.enable_endpoint(store, endpoint.id, now=T0)
    assert enabled.enabled and enabled.disabled_reason is None
    assert wh.redeliver(store, message.id, now=T0).status is MessageStatus.PENDING


def test_messages_of_a_disabled_endpoint_are_not_due(store: Store) -> None:
    endpoint = add(store)
    (message,) = wh.enqueue(store, event_type="run.completed", payload={}, now=T0)
    claim = take(store, message.id)
    wh.disable_endpoint(store, endpoint.id, reason="x", now=T0)
    record(store, claim)  # in flight while the endpoint was disabled: back to pending, but not due
    assert wh.due_messages(store, now=T0 + timedelta(days=1), limit=10) == []


def test_limits_and_naive_times_are_refused(store: Store) -> None:
    with pytest.raises(ConfigError, match="limit"):
        wh.due_messages(store, now=T0, limit=0)
    with pytest.raises(ConfigError, match="timezone-aware"):
        wh.due_messages(store, now=datetime(2026, 1, 1), limit=1)
    with pytest.raises(ConfigError, match="lease_seconds"):
        wh.claim_message(store, "msg_x", lease_seconds=0, now=T0)


# --- inbound receipts ---------------------------------------------------------------------------------------------


def test_record_inbound_detects_replays_per_source(store: Store) -> None:
    assert wh.record_inbound(store, source="dbt", message_id="evt-1", now=T0) is True
    assert wh.record_inbound(store, source="dbt", message_id="evt-1", now=T0) is False
    assert wh.record_inbound(store, source="github", message_id="evt-1", now=T0) is True
    with pytest.raises(ConfigError):
        wh.record_inbound(store, source="", message_id="x", now=T0)
    with pytest.raises(ConfigError):
        wh.record_inbound(store, source="dbt", message_id="x" * 257, now=T0)


def test_concurrent_inbound_deliveries_of_one_id_start_once(store_url: str) -> None:
    with open_store(store_url) as store:
        from bulletin.store import migrate

        migrate(store)
        with ThreadPoolExecutor(8) as pool:
            fresh = list(
                pool.map(lambda _: wh.record_inbound(store, source="std", message_id="msg_1", now=T0), range(16))
            )
    assert fresh.count(True) == 1


def test_forget_inbound_gives_one_id_back(store: Store) -> None:
    """A run that could not be started: its id is given back, and only its id, so the sender's retry is new."""
    assert wh.record_inbound(store, source="dbt", message_id="evt-1", now=T0) is True
    assert wh.record_inbound(store, source="github", message_id="evt-1", now=T0) is True
    forget_inbound(store, source="dbt", message_id="evt-1")
    assert wh.record_inbound(store, source="dbt", message_id="evt-1", now=T0) is True
    assert wh.record_inbound(store, source="github", message_id="evt-1", now=T0) is False


def test_prune_inbound_forgets_old_ids(store: Store) -> None:
    wh.record_inbound(store, source="std", message_id="old", now=T0)
    wh.record_inbound(store, source="std", message_id="new", now=T0 + timedelta(hours=1))
    assert wh.prune_inbound(store, older_than=T0 + timedelta(minutes=30)) == 1
    assert wh.record_inbound(store, source="std", message_id="old", now=T0) is True
    assert wh.record_inbound(store, source="std", message_id="new", now=T0) is False


def test_an_organisations_endpoint_hears_only_its_own_recipients(store: Store) -> None:
    operator, _ = wh.add_endpoint(store, url=URL, event_types=["*"], now=T0)
    acme, _ = wh.add_endpoint(store, url=URL, event_types=["*"], org="acme", now=T0)
    globex, _ = wh.add_endpoint(store, url=URL, event_types=["*"], org="globex", now=T0)
    about_acme = wh.enqueue(store, event_type="report.delivered", payload={"org": "acme"}, org="acme", now=T0)
    assert {m.endpoint_id for m in about_acme} == {operator.id, acme.id}
    totals = wh.enqueue(store, event_type="run.completed", payload={}, now=T0)  # a run's totals span organisations
    assert {m.endpoint_id for m in totals} == {operator.id}
    assert globex.hears_from("globex") and not globex.hears_from("acme") and not globex.hears_from(None)
