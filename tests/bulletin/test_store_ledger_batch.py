"""Batched ledger writes (bulletin.store.ledger_batch): a lane's claims and kept sent marks in one transaction decide
each row exactly as ``claim`` and ``mark_sent`` do. On a real SQLite file and (when configured) a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bulletin.errors import ClaimLostError, ConfigError
from bulletin.store import (
    ClaimOutcome,
    ClaimRequest,
    ClaimResult,
    LedgerStatus,
    Store,
    claim,
    list_deliveries,
    mark_sent,
    mark_storing,
    migrate,
    open_store,
    sent_mark,
    write_batch,
)

T0 = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
RUN_KEY = "weekly@2026-11-02T07:00:00Z"
SHA = "ab" * 32
FILE = {"sha256": SHA, "bytes": 10, "rows": 2, "token_jti": "jti-1", "secure_filters": {}}


def ask(recipient: str, run_id: str = "run-1") -> ClaimRequest:
    return ClaimRequest(
        run_key=RUN_KEY, report_id="weekly", run_id=run_id, recipient=recipient, format="xlsx", channel="s3"
    )


def take(store: Store, recipient: str, run_id: str, now: datetime) -> ClaimResult:
    request = ask(recipient, run_id)
    return claim(store, **vars(request), lease_seconds=60, now=now)


def uri(recipient: str) -> str:
    return f"s3://b/{recipient}.xlsx"


def test_a_batch_claims_each_row_as_claim_would(store: Store) -> None:
    sent = take(store, "done", "run-0", T0)
    mark_sent(store, sent, uri=uri("done"), now=T0, **FILE)
    take(store, "busy", "run-0", T0)
    batch = write_batch(store, claims=[ask("a"), ask("done"), ask("busy"), ask("b")], lease_seconds=60, now=T0)
    outcomes = [c.outcome for c in batch.claims]
    assert outcomes == [
        ClaimOutcome.CLAIMED,
        ClaimOutcome.ALREADY_SENT,
        ClaimOutcome.IN_PROGRESS,
        ClaimOutcome.CLAIMED,
    ]
    # A second claimer, one batch later, is granted none of the rows the first holds.
    again = write_batch(store, claims=[ask("a", "run-2"), ask("b", "run-2")], lease_seconds=60, now=T0)
    assert [c.outcome for c in again.claims] == [ClaimOutcome.IN_PROGRESS, ClaimOutcome.IN_PROGRESS]


def test_marks_and_claims_commit_together_and_a_lost_mark_spares_the_others(store: Store) -> None:
    first = write_batch(store, claims=[ask("a"), ask("b"), ask("c")], lease_seconds=60, now=T0).claims
    # b's lease lapses and another run takes it over before this lane writes its marks.
    newer = take(store, "b", "run-2", T0 + timedelta(seconds=61))
    assert newer.claimed
    marks = [sent_mark(c, uri=uri(c.row.recipient), **FILE) for c in first]
    batch = write_batch(store, sent=marks, claims=[ask("d")], lease_seconds=60, now=T0 + timedelta(seconds=62))
    a, b, c = batch.marked
    assert isinstance(b, ClaimLostError)
    assert not isinstance(a, ClaimLostError) and a.status is LedgerStatus.SENT and a.uri == uri("a")
    assert not isinstance(c, ClaimLostError) and c.status is LedgerStatus.SENT
    assert batch.claims[0].claimed
    rows = {r.recipient: r for r in list_deliveries(store, report_id="weekly")}
    assert (rows["b"].status, rows["b"].claimed_by, rows["b"].uri) == (LedgerStatus.PENDING, "run-2", None)
    assert rows["d"].status is LedgerStatus.PENDING


def test_claims_a_dead_lane_made_in_one_batch_lapse_and_are_sent_once(store: Store) -> None:
    # The lane claims three recipients, notes where the first file goes, stores it, and dies before any mark.
    held = write_batch(store, claims=[ask("a"), ask("b"), ask("c")], lease_seconds=60, now=T0).claims
    assert mark_storing(store, held[0], uri=uri("a"), now=T0, **FILE)
    during = write_batch(
        store, claims=[ask(r, "run-2") for r in "abc"], lease_seconds=60, now=T0 + timedelta(seconds=30)
    )
    assert all(c.outcome is ClaimOutcome.IN_PROGRESS for c in during.claims), "a live lease is left alone"
    after = write_batch(
        store, claims=[ask(r, "run-2") for r in "abc"], lease_seconds=60, now=T0 + timedelta(seconds=61)
    )
    assert all(c.claimed for c in after.claims), "nothing lost: every claim lapsed and is taken over"
    # The takeover is given where the dead lane was storing a, so it can find that file rather than store it again.
    assert (after.claims[0].row.uri, after.claims[0].row.sha256, after.claims[0].row.attempts) == (uri("a"), SHA, 2)
    assert after.claims[1].row.uri is None
    # The dead lane can record nothing over the new claims.
    late = write_batch(
        store, sent=[sent_mark(held[1], uri=uri("b"), **FILE)], lease_seconds=60, now=T0 + timedelta(seconds=62)
    )
    assert isinstance(late.marked[0], ClaimLostError)


def test_bad_input_fails_before_anything_is_written(store: Store) -> None:
    good = write_batch(store, claims=[ask("a")], lease_seconds=60, now=T0).claims[0]
    with pytest.raises(ConfigError, match="sha256"):
        sent_mark(good, uri=uri("a"), **{**FILE, "sha256": "nope"})
    with pytest.raises(ConfigError, match="lease_seconds"):
        write_batch(store, claims=[ask("b")], lease_seconds=0, now=T0)
    with pytest.raises(ConfigError):
        write_batch(store, claims=[ask("c"), ask("bad recipient/..")], lease_seconds=60, now=T0)
    assert [r.recipient for r in list_deliveries(store, report_id="weekly")] == ["a"]
    assert write_batch(store, lease_seconds=60, now=T0).claims == []


def test_only_a_write_that_asks_skips_sqlites_fsync(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'bulletin.db'}")  # synchronous is SQLite's: PostgreSQL ignores it
    migrate(store)
    with store.write(durable=False) as conn:
        lazy = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    with store.write() as conn:
        full = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    with store.read() as conn:
        read = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    store.close()
    assert (lazy, full, read) == (1, 2, 2)  # NORMAL, FULL, FULL: a pooled connection does not keep the lazy setting
