"""Pruning the state store: each kind at its boundary, live claims and retryable runs kept, bounded batches, dry
runs that delete nothing; on a real SQLite file and (when configured) a real PostgreSQL.

Rows are written with plain INSERTs so their times sit exactly where a test wants them: one second either side of
the cutoff.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from bulletin.retention import Kind, cutoff
from bulletin.store import Store
from bulletin.store.inbound import inbound_receipts
from bulletin.store.ledger_schema import deliveries
from bulletin.store.retention import prune_kind
from bulletin.store.scheduled_event_schema import scheduled_event_invocations, scheduled_events
from bulletin.store.webhook_schema import webhook_attempts, webhook_endpoints, webhook_messages

NOW = datetime(2027, 6, 1, 3, 30, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def _ledger_row(run_key: str, recipient: str, updated: datetime, **values: Any) -> dict[str, Any]:
    row = {
        "run_key": run_key,
        "report_id": "sales",
        "run_id": "run-1",
        "recipient": recipient,
        "format": "pdf",
        "channel": "s3",
        "status": "sent",
        "attempts": 1,
        "created_at": updated - timedelta(minutes=5),
        "updated_at": updated,
        "sent_at": updated,
    }
    return {**row, **values}


def _insert(store: Store, table: Any, rows: list[dict[str, Any]]) -> None:
    with store.write() as conn:
        for row in rows:  # one by one: an executemany would take every row's columns from the first
            conn.execute(insert(table).values(row))


def _count(store: Store, table: Any) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _run_keys(store: Store) -> set[str]:
    with store.read() as conn:
        return set(conn.execute(select(deliveries.c.run_key).distinct()).scalars())


def _prune(store: Store, kind: Kind, days: int, *, batch: int = 1_000, dry_run: bool = False) -> Any:
    return prune_kind(store, kind, cutoff=cutoff(NOW, days), now=NOW, batch=batch, dry_run=dry_run)


def test_a_run_key_one_second_younger_than_the_limit_stays(store: Store) -> None:
    edge = cutoff(NOW, 400)
    _insert(
        store,
        deliveries,
        [
            _ledger_row("old@2026-01-01T07:00:00Z", "a", edge - SECOND),
            _ledger_row("old@2026-01-01T07:00:00Z", "b", edge - timedelta(days=3)),
            _ledger_row("young@2026-01-02T07:00:00Z", "a", edge + SECOND),
            _ledger_row("exact@2026-01-02T07:00:00Z", "a", edge),
        ],
    )
    pruned = _prune(store, Kind.LEDGER, 400)
    assert pruned.rows == 2
    assert _run_keys(store) == {"young@2026-01-02T07:00:00Z", "exact@2026-01-02T07:00:00Z"}


def test_a_live_claim_keeps_its_whole_run_key(store: Store) -> None:
    """A pending row under an unexpired lease is a delivery being made now: nothing of its run key goes, however
    old its other rows (and an expired lease on a row that old is a dead run: it goes)."""
    old = cutoff(NOW, 400) - timedelta(days=10)
    _insert(
        store,
        deliveries,
        [
            _ledger_row("live", "a", old),
            _ledger_row("live", "b", old, status="pending", sent_at=None, lease_expires_at=NOW + SECOND),
            _ledger_row("dead", "a", old, status="pending", sent_at=None, lease_expires_at=old + timedelta(seconds=90)),
        ],
    )
    assert _prune(store, Kind.LEDGER, 400).rows == 1
    assert _run_keys(store) == {"live"}
    assert _count(store, deliveries) == 2


def test_a_run_still_being_retried_keeps_its_old_rows(store: Store) -> None:
    """A run key whose failed row was retried yesterday is a run that can still be retried: its row sent long ago
    stays too, or the next retry would send it again."""
    old = cutoff(NOW, 400) - timedelta(days=30)
    _insert(
        store,
        deliveries,
        [
            _ledger_row("retried", "sent-long-ago", old),
            _ledger_row("retried", "failed-then-retried", NOW - timedelta(days=1), status="failed", sent_at=None),
        ],
    )
    assert _prune(store, Kind.LEDGER, 400).rows == 0
    assert _count(store, deliveries) == 2


def test_ledger_batches_are_bounded_and_a_dry_run_deletes_nothing(store: Store) -> None:
    old = cutoff(NOW, 400) - timedelta(days=1)
    _insert(store, deliveries, [_ledger_row(f"k{i % 3}", f"r{i}", old) for i in range(10)])
    assert _prune(store, Kind.LEDGER, 400, batch=4, dry_run=True).rows == 10
    assert _count(store, deliveries) == 10
    pruned = _prune(store, Kind.LEDGER, 400, batch=4)
    assert pruned.rows == 10
    assert max(pruned.batches) <= 4
    assert sum(pruned.batches) == 10
    assert _count(store, deliveries) == 0


def _endpoint(store: Store) -> None:
    _insert(
        store,
        webhook_endpoints,
        [
            {
                "id": "ep_1",
                "url": "https://hooks.example.com/x",
                "event_types": ["*"],
                "secret": "whsec_x",
                "style": "standard",
                "enabled": True,
                "description": "",
                "created_at": NOW,
                "updated_at": NOW,
            }
        ],
    )


def _message(message_id: str, status: str, updated: datetime) -> dict[str, Any]:
    return {
        "id": message_id,
        "endpoint_id": "ep_1",
        "event_type": "run.completed",
        "payload": "{}",
        "status": status,
        "attempts": 1,
        "created_at": updated - timedelta(hours=1),
        "updated_at": updated,
    }


def _attempt(message_id: str, when: datetime) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "endpoint_id": "ep_1",
        "attempted_at": when,
        "duration_ms": 5,
        "outcome": "success",
    }


def test_webhook_messages_and_attempts_at_their_boundary(store: Store) -> None:
    edge = cutoff(NOW, 30)
    _endpoint(store)
    _insert(
        store,
        webhook_messages,
        [
            _message("msg_old", "delivered", edge - SECOND),
            _message("msg_young", "delivered", edge + SECOND),
            _message("msg_failed_old", "failed", edge - timedelta(days=2)),
            _message("msg_pending_old", "pending", edge - timedelta(days=2)),  # still to be retried: stays
        ],
    )
    _insert(
        store,
        webhook_attempts,
        [_attempt(m, edge - timedelta(days=3)) for m in ("msg_old", "msg_young", "msg_failed_old", "msg_pending_old")]
        + [_attempt("msg_old", edge - SECOND)],
    )
    assert _prune(store, Kind.WEBHOOK_ATTEMPTS, 30, dry_run=True).rows == 3
    assert _count(store, webhook_attempts) == 5
    assert _prune(store, Kind.WEBHOOK_ATTEMPTS, 30, batch=2).batches == [2, 1]
    assert _prune(store, Kind.WEBHOOK_MESSAGES, 30).rows == 2
    with store.read() as conn:
        left = set(conn.execute(select(webhook_messages.c.id)).scalars())
        attempts_left = set(conn.execute(select(webhook_attempts.c.message_id)).scalars())
    assert left == {"msg_young", "msg_pending_old"}
    assert attempts_left == left


def test_inbound_receipts_at_their_boundary(store: Store) -> None:
    edge = cutoff(NOW, 7)
    _insert(
        store,
        inbound_receipts,
        [
            {"source": "t:github", "message_id": "old", "received_at": edge - SECOND},
            {"source": "t:github", "message_id": "young", "received_at": edge + SECOND},
        ],
    )
    assert _prune(store, Kind.INBOUND_RECEIPTS, 7).rows == 1
    with store.read() as conn:
        assert list(conn.execute(select(inbound_receipts.c.message_id)).scalars()) == ["young"]


def _event(event_id: str, status: str, updated: datetime) -> dict[str, Any]:
    return {
        "id": event_id,
        "org": "acme",
        "webhook": "https://hooks.example.com/e",
        "schedule_at": updated - timedelta(hours=1),
        "body": "{}",
        "headers": [],
        "num_retries": 0,
        "retry_interval_seconds": 10,
        "timeout_seconds": 10,
        "tolerance_seconds": 3600,
        "status": status,
        "tries": 1,
        "due_at": updated - timedelta(hours=1),
        "created_at": updated - timedelta(hours=2),
        "updated_at": updated,
    }


def _invocation(event_id: str, when: datetime) -> dict[str, Any]:
    return {"event_id": event_id, "attempt": 1, "attempted_at": when, "request_headers": {}, "duration_ms": 3}


def test_scheduled_events_and_invocations_at_their_boundary(store: Store) -> None:
    edge = cutoff(NOW, 30)
    _insert(
        store,
        scheduled_events,
        [
            _event("ev_old", "delivered", edge - SECOND),
            _event("ev_young", "dead", edge + SECOND),
            _event("ev_waiting", "scheduled", edge - timedelta(days=5)),  # not sent yet: stays
        ],
    )
    _insert(
        store,
        scheduled_event_invocations,
        [_invocation(e, edge - timedelta(days=1)) for e in ("ev_old", "ev_young", "ev_waiting")],
    )
    assert _prune(store, Kind.SCHEDULED_EVENT_INVOCATIONS, 30).rows == 1
    assert _prune(store, Kind.SCHEDULED_EVENTS, 30).rows == 1
    with store.read() as conn:
        assert set(conn.execute(select(scheduled_events.c.id)).scalars()) == {"ev_young", "ev_waiting"}
        assert _count(store, scheduled_event_invocations) == 2


def test_a_batch_must_hold_a_row(store: Store) -> None:
    with pytest.raises(ValueError, match="batch"):
        _prune(store, Kind.INBOUND_RECEIPTS, 7, batch=0)


def test_a_row_claimed_while_its_run_key_is_pruned_is_not_deleted(store: Store) -> None:
    """A re-run claims a row of an old run key while the prune is deleting it: the prune waits for the claim's
    transaction, and the claimed row stays (on PostgreSQL the DELETE checks the row's new version again)."""
    import threading
    import time

    from sqlalchemy import update

    old = cutoff(NOW, 400) - timedelta(days=10)
    _insert(store, deliveries, [_ledger_row("rerun", "a", old), _ledger_row("rerun", "b", old, status="failed")])
    claiming = threading.Event()
    result: dict[str, Any] = {}

    def claim_and_hold() -> None:
        with store.write() as conn:
            reclaim = update(deliveries).where(deliveries.c.recipient == "b")
            conn.execute(reclaim.values(status="pending", lease_expires_at=NOW + timedelta(seconds=90), updated_at=NOW))
            claiming.set()
            time.sleep(0.8)  # the prune's DELETE starts meanwhile and waits for this row

    claimer = threading.Thread(target=claim_and_hold)
    claimer.start()
    assert claiming.wait(10)
    result["pruned"] = _prune(store, Kind.LEDGER, 400)
    claimer.join()
    with store.read() as conn:
        left = {r.recipient: r.status for r in conn.execute(select(deliveries))}
    assert "b" in left and left["b"] == "pending", f"the claimed row was deleted: {left} ({result})"
